"""Rank helpers for multi-process (torchrun) training: who am I, who writes, and gradient averaging."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator

import torch
import torch.distributed as dist

__all__ = ["average_gradients", "broadcast_from_main", "is_main_rank", "process_group_from_environment", "rank_and_world"]


def _active() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank_and_world() -> tuple[int, int]:
    """``(rank, world size)``: ``(0, 1)`` outside ``torch.distributed``."""
    return (dist.get_rank(), dist.get_world_size()) if _active() else (0, 1)


def is_main_rank() -> bool:
    """Whether this process writes files and logs (rank 0, or the only process)."""
    return rank_and_world()[0] == 0


def average_gradients(parameters: Iterable[torch.nn.Parameter]) -> None:
    """Average the gradients of ``parameters`` over all ranks (a no-op with one process)."""
    _, world = rank_and_world()
    if world == 1:
        return
    for p in parameters:
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= world


def broadcast_from_main(tensors: Iterable[torch.Tensor]) -> None:
    """Make every rank start from rank 0's values (a no-op with one process)."""
    if rank_and_world()[1] == 1:
        return
    for tensor in tensors:
        dist.broadcast(tensor, src=0)


@contextlib.contextmanager
def process_group_from_environment() -> Iterator[None]:
    """Join the process group that torchrun's environment describes (``WORLD_SIZE`` over 1 and none joined yet), and
    leave it on exit: NCCL with each process on its own GPU (``LOCAL_RANK``) where CUDA is available, else gloo.
    The rendezvous (``MASTER_ADDR``/``MASTER_PORT``, or torchrun's ``--rdzv-endpoint`` across nodes) is torchrun's.
    A no-op for one process, or inside a group already joined (e.g. by a bundle's config)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available() or dist.is_initialized():
        yield
        return
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    try:
        yield
    finally:
        dist.destroy_process_group()
