"""Image-similarity metrics inside an optional mask, with a fixed data range (never inferred from the prediction)."""

from __future__ import annotations

import math

import numpy as np
import torch
from monai.metrics.regression import compute_ssim_and_cs

__all__ = ["checkerboard", "high_frequency_fraction", "mae", "nyquist_fraction", "psnr", "ssim", "texture"]


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


def nyquist_fraction(image: np.ndarray, mask: np.ndarray | None = None) -> float:
    """The share of an image's (non-constant) energy at the 2-voxel period: Fourier bins at the Nyquist frequency of
    any axis. A stride-2 transposed convolution's checkerboard puts its energy exactly there.

    The image is centred inside ``mask`` and set to 0 outside it (so the mask's border weighs the same in any two
    images compared on one mask); odd sides lose their last voxel.
    """
    x = np.asarray(image, dtype=np.float64)
    m = np.ones(x.shape, bool) if mask is None else np.asarray(mask) > 0
    x = np.where(m, x - x[m].mean(), 0.0)
    x = x[tuple(slice(0, s - s % 2) for s in x.shape)]
    power = np.abs(np.fft.fftn(x)) ** 2
    nyquist = np.zeros(power.shape, bool)
    for axis, size in enumerate(power.shape):
        index = [slice(None)] * power.ndim
        index[axis] = size // 2
        nyquist[tuple(index)] = True
    total = power.sum() - power.flat[0]
    return float(power[nyquist].sum() / total) if total > 0 else 0.0


def checkerboard(pred: np.ndarray, target: np.ndarray, mask: np.ndarray | None = None) -> float:
    """How much more of its energy a prediction has at the 2-voxel period than the target: 1 means no more than the
    target, 10 means ten times as much (a visible checkerboard). See :func:`nyquist_fraction`."""
    reference = nyquist_fraction(target, mask)
    if reference == 0:
        raise ValueError("the target has no energy at the 2-voxel period to compare with")
    return nyquist_fraction(pred, mask) / reference


def high_frequency_fraction(image: np.ndarray, mask: np.ndarray | None = None, sigma: float = 1.0,
                            margin: int = 2) -> float:
    """The share of an image's variance inside ``mask`` that a Gaussian of ``sigma`` voxels removes: its fine texture
    (noise, speckle, a checkerboard), scale-free.

    The smoothing is a normalised convolution inside the mask (the background never blurs in), and the share is taken
    ``margin`` voxels inside the mask's border, whose edge would otherwise dominate.

    Raises:
        ValueError: on an empty (eroded) mask or an image constant inside it.
    """
    from scipy import ndimage

    x = np.asarray(image, dtype=np.float64)
    m = np.ones(x.shape, bool) if mask is None else np.asarray(mask) > 0
    if m.shape != x.shape:
        raise ValueError(f"mask shape {m.shape} differs from image shape {x.shape}")
    x, m = x.squeeze(), m.squeeze()  # a single slice is smoothed and eroded in-plane only
    weight = ndimage.gaussian_filter(m.astype(np.float64), sigma)
    smooth = ndimage.gaussian_filter(np.where(m, x, 0.0), sigma) / np.maximum(weight, 1e-12)
    inner = ndimage.binary_erosion(m, iterations=margin) if margin > 0 else m
    if not inner.any():
        raise ValueError(f"no mask voxel lies {margin} voxels inside its border")
    spread = x[inner].var()
    if spread == 0:
        raise ValueError("the image is constant inside the mask")
    return float(np.mean((x[inner] - smooth[inner]) ** 2) / spread)


def texture(pred: np.ndarray, target: np.ndarray, mask: np.ndarray | None = None) -> float:
    """How much more fine texture a prediction carries than the target (see :func:`high_frequency_fraction`):
    1 = as much, 2 = twice the share of its variance at the finest scale (speckle the target lacks), below 1 smoother."""
    return high_frequency_fraction(pred, mask) / high_frequency_fraction(target, mask)
