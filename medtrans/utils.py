"""Small shared helpers."""

from __future__ import annotations

import numbers
import random

import numpy as np
import torch

from medtrans.defaults import SEED_MAX
from medtrans.errors import InputError

__all__ = ["resolve_device", "seed_everything"]


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) RNGs; torchio samplers and queues draw from torch's.

    Raises:
        ValueError: for a seed outside [0, :data:`medtrans.defaults.SEED_MAX`] (what torch and NumPy all accept).
    """
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed <= SEED_MAX:
        raise ValueError(f"seed must be an integer in [0, 2**64 - 1], got {seed!r}")
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` → CUDA when available, else CPU; otherwise the named device: ``cpu``, ``cuda`` or ``cuda:N``.

    Raises:
        InputError: naming ``--device``, for an unknown device, another kind than CPU or CUDA (``meta``, ...), or
            a CUDA device torch does not see.
    """
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except RuntimeError as err:
        raise InputError("--device", f"unknown device {str(device)!r} (auto, cpu, cuda, cuda:N): {err}") from None
    if device.type not in ("cpu", "cuda") or (device.type == "cpu" and device.index not in (None, 0)):
        raise InputError("--device", f"{str(device)!r} cannot run medtrans; use auto, cpu, cuda or cuda:N")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError("--device", f"{str(device)!r} was asked for but torch sees no CUDA device")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise InputError("--device", f"{str(device)!r} was asked for but torch sees {torch.cuda.device_count()} CUDA "
                                     f"device(s), cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    return device
