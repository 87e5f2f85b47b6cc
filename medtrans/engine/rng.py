"""Separate random streams for data sampling and training, so a resumed run can replay the data exactly."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

__all__ = ["RNGStream", "get_rng_state", "set_rng_state"]


def get_rng_state() -> dict[str, Any]:
    """Python, NumPy, torch CPU (and CUDA) generator states, as tensors and plain values only, so checkpoints holding
    them load with ``torch.load(weights_only=True)``."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class RNGStream:
    """A random stream of its own: inside :meth:`active` the global generators follow this stream, and whatever else
    the program draws outside it (network initialisation, dropout, patch sampling of PatchNCE) does not shift it.

    torchio's samplers and queues draw from the global generators, so running the data pipeline inside a stream makes
    the sequence of batches a function of the stream's seed alone.
    """

    def __init__(self, seed: int) -> None:
        with self._isolated():
            random.seed(seed)
            np.random.seed(seed % 2**32)
            torch.manual_seed(seed)
            self.state = get_rng_state()

    @staticmethod
    @contextlib.contextmanager
    def _isolated() -> Iterator[None]:
        saved = get_rng_state()
        try:
            yield
        finally:
            set_rng_state(saved)

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        with self._isolated():
            set_rng_state(self.state)
            try:
                yield
            finally:
                self.state = get_rng_state()
