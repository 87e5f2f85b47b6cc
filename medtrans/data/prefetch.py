"""Batches made ahead of the trainer by background threads: each batch is a pure function of its index, so
``num_workers`` daemon threads make batches ``start, start + 1, ...`` in any order (pinned when CUDA is there) and the
consumer takes them in order; at most ``prefetch`` are made or being made ahead of it. Several threads overlap the
waits of batches read from the on-disk cache. An error in a thread is raised in the consumer, at its batch."""

from __future__ import annotations

import atexit
import threading
import weakref
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from medtrans.data.stream import TrainStream

__all__ = ["Prefetcher"]

_LIVE: weakref.WeakSet = weakref.WeakSet()


@atexit.register
def _stop_prefetchers() -> None:
    """Stop prefetch threads before the interpreter finalises (a daemon thread still inside torch then would abort)."""
    for prefetcher in list(_LIVE):
        prefetcher.stop()


class Prefetcher:
    """Daemon threads making batches ``start, start + 1, ...`` of a stream ahead of the consumer, who gets them in
    order: ``max(1, min(num_workers, prefetch))`` threads, at most ``prefetch`` batches ahead."""

    def __init__(self, stream: TrainStream, start: int) -> None:
        self.stream = stream
        self.depth = stream.config.prefetch
        self.pin = torch.cuda.is_available()
        self.ready: dict[int, Any] = {}  # index -> batch, or the error making it raised
        self.taken = start  # the next index the consumer gets
        self.claimed = start  # the next index a thread makes
        self.stopped = False
        self.changed = threading.Condition()
        workers = max(1, min(stream.config.num_workers, self.depth))
        self.threads = [threading.Thread(target=self._run, daemon=True, name=f"medtrans-prefetch-{k}")
                        for k in range(workers)]
        for thread in self.threads:
            thread.start()
        _LIVE.add(self)

    def _run(self) -> None:
        while True:
            with self.changed:
                while not self.stopped and self.claimed >= self.taken + self.depth:
                    self.changed.wait()
                if self.stopped:
                    return
                index = self.claimed
                self.claimed += 1
            try:
                batch = self.stream.batch(index)
                if self.pin:
                    batch = {k: v.pin_memory() for k, v in batch.items()}
            except BaseException as err:  # noqa: BLE001 - handed to the consumer, raised there
                batch = err
            with self.changed:
                self.ready[index] = batch
                self.changed.notify_all()

    def get(self) -> dict[str, torch.Tensor]:
        with self.changed:
            while self.taken not in self.ready:
                self.changed.wait()
            batch = self.ready.pop(self.taken)
            self.taken += 1
            self.changed.notify_all()
        if isinstance(batch, BaseException):
            raise batch
        return batch

    def stop(self) -> None:
        with self.changed:
            self.stopped = True
            self.changed.notify_all()
        for thread in self.threads:
            thread.join()
