"""The prefetch threads: batches in order from several threads, at most ``prefetch`` ahead, errors at their batch."""

import threading
import time

import pytest
import torch

from medtrans.data.prefetch import Prefetcher
from medtrans.data.stream import PatchConfig


class _Stream:
    """A stand-in for :class:`~medtrans.data.TrainStream`: batch ``i`` holds ``i``; some indices fail; it records
    which indices were made and how many at once."""

    def __init__(self, prefetch, num_workers, fail=(), delay=0.01):
        self.config = PatchConfig(patch_size=(8, 8, 8), prefetch=prefetch, num_workers=num_workers)
        self.fail, self.delay = set(fail), delay
        self.made, self.busy, self.most = [], 0, 0
        self.lock = threading.Lock()

    def batch(self, index):
        with self.lock:
            self.busy += 1
            self.most = max(self.most, self.busy)
        time.sleep(self.delay)  # a read from the disk: threads overlap their waits
        with self.lock:
            self.busy -= 1
            self.made.append(index)
        if index in self.fail:
            raise OSError(f"cannot read batch {index}")
        return {"a": torch.tensor([index])}


def test_several_threads_hand_over_the_batches_in_order():
    stream = _Stream(prefetch=6, num_workers=3)
    prefetcher = Prefetcher(stream, start=5)
    try:
        assert [int(prefetcher.get()["a"]) for _ in range(20)] == list(range(5, 25))
    finally:
        prefetcher.stop()
    assert stream.most == 3  # three batches were being made at once
    assert max(stream.made) < 25 + 6  # never more than `prefetch` ahead of the consumer


def test_the_threads_stay_within_prefetch_batches_ahead():
    stream = _Stream(prefetch=2, num_workers=4, delay=0.0)
    prefetcher = Prefetcher(stream, start=0)
    try:
        prefetcher.get()
        time.sleep(0.2)
        assert sorted(stream.made) == [0, 1, 2]  # batch 0 taken, 1 and 2 ready; 3 waits for the consumer
        assert len(prefetcher.threads) == 2  # no more threads than batches ahead
    finally:
        prefetcher.stop()


def test_an_error_is_raised_at_its_batch_and_stop_joins_every_thread():
    stream = _Stream(prefetch=4, num_workers=2, fail={3})
    prefetcher = Prefetcher(stream, start=0)
    assert [int(prefetcher.get()["a"]) for _ in range(3)] == [0, 1, 2]
    with pytest.raises(OSError, match="batch 3"):
        prefetcher.get()
    prefetcher.stop()
    assert not any(thread.is_alive() for thread in prefetcher.threads)
