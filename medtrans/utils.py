"""Small shared helpers."""

from __future__ import annotations

import random

import numpy as np
import torch

from medtrans.errors import InputError

__all__ = ["resolve_device", "seed_everything"]


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) RNGs; torchio samplers and queues draw from torch's."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` → CUDA when available, else CPU; otherwise the named device.

    Raises:
        InputError: naming ``--device``, for an unknown device or CUDA asked for where torch sees none.
    """
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except RuntimeError as err:
        raise InputError("--device", f"unknown device {str(device)!r} (auto, cpu, cuda, cuda:N): {err}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError("--device", f"{str(device)!r} was asked for but torch sees no CUDA device")
    return device
