"""Image-similarity metrics inside an optional mask, with a fixed data range (never inferred from the prediction)."""

from __future__ import annotations

import math

import numpy as np
import torch
from monai.metrics.regression import compute_ssim_and_cs

__all__ = ["mae", "psnr", "ssim"]


def _as_tensor(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x, dtype=torch.float64)


def _mask(mask: np.ndarray | torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    if mask is None:
        return torch.ones_like(like, dtype=torch.bool)
    m = torch.as_tensor(np.asarray(mask) if not isinstance(mask, torch.Tensor) else mask) > 0
    if m.shape != like.shape:
        raise ValueError(f"mask shape {tuple(m.shape)} differs from image shape {tuple(like.shape)}")
    if not m.any():
        raise ValueError("the mask is empty")
    return m


def _check(pred: torch.Tensor, target: torch.Tensor) -> None:
    if pred.shape != target.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} shapes differ")


def mae(pred, target, mask=None) -> float:
    """Mean absolute error inside ``mask``."""
    p, t = _as_tensor(pred), _as_tensor(target)
    _check(p, t)
    m = _mask(mask, p)
    return float((p - t).abs()[m].mean())


def psnr(pred, target, data_range: float, mask=None) -> float:
    """``10 log10(data_range² / MSE)`` inside ``mask``; ``inf`` for identical images."""
    p, t = _as_tensor(pred), _as_tensor(target)
    _check(p, t)
    mse = float(((p - t) ** 2)[_mask(mask, p)].mean())
    return math.inf if mse == 0 else 10.0 * math.log10(data_range**2 / mse)


def ssim(pred, target, data_range: float, mask=None, kernel_size: int = 7, kernel_sigma: float = 1.5) -> float:
    """SSIM (Gaussian window) of 2D or 3D images, its map averaged over the mask voxels the window fits around.

    Built on MONAI's ``compute_ssim_and_cs`` (k1 = 0.01, k2 = 0.03, ``data_range`` fixed by the caller).
    """
    p, t = _as_tensor(pred), _as_tensor(target)
    _check(p, t)
    m = _mask(mask, p)
    dims = p.ndim
    if dims not in (2, 3):
        raise ValueError(f"ssim takes 2D or 3D images, got {dims}D")
    if min(p.shape) < kernel_size:
        raise ValueError(f"images of shape {tuple(p.shape)} are smaller than the {kernel_size}-voxel SSIM window")
    ssim_map, _ = compute_ssim_and_cs(
        p[None, None], t[None, None], spatial_dims=dims, kernel_size=[kernel_size] * dims,
        kernel_sigma=[kernel_sigma] * dims, data_range=data_range,
    )
    half = kernel_size // 2
    inner = m[tuple(slice(half, s - half) for s in m.shape)]
    if not inner.any():
        raise ValueError("no mask voxel lies far enough from the border for the SSIM window")
    return float(ssim_map[0, 0][inner].mean())
