"""Batches made ahead of the trainer: a daemon thread asks the stream for batches in order and hands them over
through a bounded queue (pinned when CUDA is there); an error in the thread is raised in the consumer."""

from __future__ import annotations

import atexit
import queue
import threading
import weakref
from typing import TYPE_CHECKING

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
    """A daemon thread putting batches ``start, start + 1, ...`` of a stream into a bounded queue."""

    def __init__(self, stream: TrainStream, start: int) -> None:
        self.stream = stream
        self.queue: queue.Queue = queue.Queue(maxsize=stream.config.prefetch)
        self.stopped = threading.Event()
        self.pin = torch.cuda.is_available()
        self.thread = threading.Thread(target=self._run, args=(start,), daemon=True, name="medtrans-prefetch")
        self.thread.start()
        _LIVE.add(self)

    def _run(self, index: int) -> None:
        while not self.stopped.is_set():
            try:
                batch = self.stream.batch(index)
                if self.pin:
                    batch = {k: v.pin_memory() for k, v in batch.items()}
            except BaseException as err:  # noqa: BLE001 - handed to the consumer, raised there
                batch = err
            while not self.stopped.is_set():
                try:
                    self.queue.put(batch, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if isinstance(batch, BaseException):
                return
            index += 1

    def get(self) -> dict[str, torch.Tensor]:
        batch = self.queue.get()
        if isinstance(batch, BaseException):
            raise batch
        return batch

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join()
