"""The training random state (Python, NumPy, torch) saved in checkpoints, so a resumed run continues exactly.

The data stream does not use these generators: each of its batches has its own (see :mod:`medtrans.data.stream`)."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from medtrans.distributed import rank_and_world

__all__ = ["get_rng_state", "gather_rng_states", "set_rng_state"]


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


def gather_rng_states() -> dict[str, Any]:
    """:func:`get_rng_state`, or under ``torch.distributed`` every rank's, as ``{"ranks": [...]}`` (a collective:
    every rank calls it), so that each process of a resumed run continues its own random sequence."""
    state = get_rng_state()
    world = rank_and_world()[1]
    if world == 1:
        return state
    states: list[Any] = [None] * world
    dist.all_gather_object(states, state)
    return {"ranks": states}


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore a state of :func:`get_rng_state`, or this rank's of :func:`gather_rng_states` (rank 0's for a rank the
    saving run did not have: a run resumed on more processes continues, though not exactly)."""
    if "ranks" in state:
        rank = rank_and_world()[0]
        state = state["ranks"][rank if rank < len(state["ranks"]) else 0]
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
