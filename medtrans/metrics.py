"""Image-similarity metrics inside an optional mask, with a fixed data range (never inferred from the prediction)."""

from __future__ import annotations

import math

import numpy as np
import torch
from monai.metrics.regression import compute_ssim_and_cs

__all__ = ["MS_SSIM_WEIGHTS", "checkerboard", "high_frequency_fraction", "mae", "ms_ssim", "ms_ssim_min_side",
           "nyquist_fraction", "psnr", "ssim", "ssim_maps", "texture"]

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
"""The exponents of MS-SSIM's five scales, finest first (Wang, Simoncelli & Bovik, Asilomar 2003; MONAI's
``MultiScaleSSIMMetric`` and the SynthRAD evaluation use the same)."""


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


def _gaussian_taps(size: int, sigma: float) -> np.ndarray:
    """The 1D Gaussian window of MONAI's SSIM (``monai.metrics.regression._gaussian_kernel`` is its outer product)."""
    dist = np.arange(size, dtype=np.float64) - (size - 1) / 2
    taps = np.exp(-0.5 * (dist / sigma) ** 2)
    return taps / taps.sum()


def _blur(x: np.ndarray, taps: np.ndarray) -> np.ndarray:
    """``x`` convolved with ``taps`` along every axis, the border replicated: a same-size separable Gaussian (3 × 11
    taps a voxel in 3D where MONAI's full kernel takes 11³; a 256 × 256 × 200 CT's MS-SSIM in 2 s, not 20)."""
    from scipy import ndimage

    for axis in range(x.ndim):
        x = ndimage.correlate1d(x, taps, axis=axis, mode="nearest")
    return x


def ssim_maps(pred, target, data_range: float, kernel_size: int = 11, kernel_sigma: float = 1.5, k1: float = 0.01,
              k2: float = 0.03) -> tuple[np.ndarray, np.ndarray]:
    """The SSIM map and the contrast–structure map (``cs``) of two 2D or 3D images, each the images' own size.

    The quantities of MONAI's ``compute_ssim_and_cs`` (Gaussian window, ``c1 = (k1·range)²``, ``c2 = (k2·range)²``;
    equal to it, to float32 rounding, wherever the window fits inside the image), with a separable window and the
    border replicated, so voxels at the image's edge have a value too. float32, as MONAI's.
    """
    x, y = (np.asarray(v, dtype=np.float32) for v in (pred, target))
    if x.shape != y.shape:
        raise ValueError(f"prediction {x.shape} and target {y.shape} shapes differ")
    if x.ndim not in (2, 3):
        raise ValueError(f"ssim_maps takes 2D or 3D images, got {x.ndim}D")
    taps = _gaussian_taps(kernel_size, kernel_sigma)
    mu_x, mu_y, mu_xx, mu_yy, mu_xy = (_blur(v, taps) for v in (x, y, x * x, y * y, x * y))
    c1, c2 = np.float32((k1 * data_range) ** 2), np.float32((k2 * data_range) ** 2)
    cs = (2 * (mu_xy - mu_x * mu_y) + c2) / ((mu_xx - mu_x * mu_x) + (mu_yy - mu_y * mu_y) + c2)
    luminance = (2 * mu_x * mu_y + c1) / (mu_x * mu_x + mu_y * mu_y + c1)
    return luminance * cs, cs


def ms_ssim_min_side(scales: int = len(MS_SSIM_WEIGHTS), kernel_size: int = 11) -> int:
    """The side (voxels) below which :func:`ms_ssim` pads an image: a whole window at the coarsest scale."""
    return kernel_size * 2 ** (scales - 1)


def _halve(x: np.ndarray, reduce) -> np.ndarray:
    """``x`` reduced over 2-voxel blocks along every axis (a last odd voxel dropped, as PyTorch's pooling does)."""
    x = x[tuple(slice(0, s - s % 2) for s in x.shape)]
    blocks = x.reshape([v for s in x.shape for v in (s // 2, 2)])
    return reduce(blocks, axis=tuple(range(1, blocks.ndim, 2)))


def ms_ssim(pred, target, data_range: float, mask=None, kernel_size: int = 11, kernel_sigma: float = 1.5,
            weights: tuple[float, ...] = MS_SSIM_WEIGHTS) -> float:
    """Multi-scale SSIM of 2D or 3D images inside an optional mask, with a fixed ``data_range``.

    ``Π_j m_j^{w_j}`` over ``len(weights)`` scales (Wang et al. 2003): ``m_j`` is the mean of the contrast–structure
    map at scale ``j`` (of the full SSIM map at the coarsest) over the mask's voxels at that scale, clipped at 0 (as
    MONAI's ``MultiScaleSSIMMetric`` and the SynthRAD evaluation clip). Between scales both images are averaged over
    2-voxel blocks and the mask keeps every block that holds a mask voxel. Maps come from :func:`ssim_maps` (border
    replicated), so a mask voxel on the image's edge — a body cut by the first and last slices of a CT — counts at
    every scale.

    An axis shorter than :func:`ms_ssim_min_side` (176 voxels for 5 scales and an 11-voxel window: a whole window at
    the coarsest scale; MONAI's metric refuses such images) is padded to it by replicating the border of both images,
    outside the mask (SynthRAD's evaluation pads likewise, to 97 voxels for its 7-voxel window). A single slice
    ``(X, Y, 1)`` therefore scores as its 2D MS-SSIM.

    Raises:
        ValueError: on shapes that differ, an empty mask, images that are not 2D or 3D, or no weights.
    """
    x, y = (np.asarray(v, dtype=np.float32) for v in (pred, target))  # float32 as MONAI: a 50-million-voxel CT
    if x.shape != y.shape:                                               # takes 400 MB a copy in float64
        raise ValueError(f"prediction {x.shape} and target {y.shape} shapes differ")
    if x.ndim not in (2, 3):
        raise ValueError(f"ms_ssim takes 2D or 3D images, got {x.ndim}D")
    if not weights:
        raise ValueError("ms_ssim needs at least one scale weight")
    inside = np.ones(x.shape, bool) if mask is None else np.asarray(mask) > 0
    if inside.shape != x.shape:
        raise ValueError(f"mask shape {inside.shape} differs from image shape {x.shape}")
    if not inside.any():
        raise ValueError("the mask is empty")
    side = ms_ssim_min_side(len(weights), kernel_size)
    grow = [(max(0, side - s) // 2, max(0, side - s) - max(0, side - s) // 2) for s in x.shape]
    if any(sum(g) for g in grow):
        x, y = np.pad(x, grow, mode="edge"), np.pad(y, grow, mode="edge")
        inside = np.pad(inside, grow, constant_values=False)
    score = 1.0
    for j, weight in enumerate(weights):
        ssim_map, cs_map = ssim_maps(x, y, data_range, kernel_size, kernel_sigma)
        term = float((ssim_map if j == len(weights) - 1 else cs_map)[inside].mean(dtype=np.float64))
        score *= max(term, 0.0) ** weight
        if j < len(weights) - 1:
            x, y, inside = _halve(x, np.mean), _halve(y, np.mean), _halve(inside, np.any)
    return float(score)


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
