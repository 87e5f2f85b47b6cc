"""One rule for numeric precision, shared by training and inference.

``precision`` is one of :data:`PRECISION_TYPES`:

- ``"fp32"``: no autocast.
- ``"bf16"`` / ``"fp16"``: autocast to that type (fp16 with gradient scaling when training on CUDA).
- ``"auto"`` (the default): on CPU, fp32; on CUDA, TF32 for fp32 matrix products and convolutions, and bf16 autocast
  only for work of at least :data:`BF16_MIN_VOXELS` voxels per batch (network input), where it was measured to win.
  On an H200 bf16 lost to fp32 below that (CUT 3D 48³: 0.077 vs 0.067 s/step; CUT 2D 256²: 0.086 vs 0.060 s) and won
  from 96³ up (CycleGAN 96³: 0.170 vs 0.253 s; CUT 96³: 0.100 vs 0.127 s); see docs/training.md.

The adversarial losses are computed from logits (:mod:`medtrans.losses.adversarial`), so every precision is safe
under CUDA autocast.
"""

from __future__ import annotations

import contextlib

import torch

from medtrans.defaults import PRECISION_TYPES

__all__ = ["BF16_MIN_VOXELS", "PRECISION_TYPES", "autocast", "resolve_precision"]

BF16_MIN_VOXELS = 96**3
_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_precision(precision: str, device: torch.device | str, voxels: int | None = None) -> str:
    """The precision that ``precision`` means on ``device`` for batches of ``voxels`` voxels: fp32, bf16 or fp16.

    ``"auto"`` on CUDA also allows TF32 for fp32 matrix products and convolutions (a process-wide PyTorch setting).

    Raises:
        ValueError: on an unknown precision.
    """
    if precision not in PRECISION_TYPES:
        raise ValueError(f"precision must be one of {PRECISION_TYPES}, got {precision!r}")
    device = torch.device(device)
    if precision != "auto":
        return precision
    if device.type != "cuda":
        return "fp32"
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    large = voxels is not None and voxels >= BF16_MIN_VOXELS
    return "bf16" if large and torch.cuda.is_bf16_supported() else "fp32"


def autocast(precision: str, device: torch.device | str) -> contextlib.AbstractContextManager:
    """The autocast context of a resolved precision (``"fp32"``, ``"bf16"`` or ``"fp16"``) on ``device``."""
    dtype = _DTYPES[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)
