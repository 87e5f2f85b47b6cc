"""Forward intensity mappings into the network's range, recorded so translations can be mapped back.

A mapping *spec* is a small JSON-able dict chosen per domain in config; fitting it to a volume gives an
:class:`AffineIntensity` (``y = scale·x + offset``, optionally clipped to [-1, 1]) that is exactly invertible on the
unclipped range:

- ``{"type": "percentile", "lower": 1, "upper": 99}``: the ``lower``–``upper`` percentiles of the foreground (the mask,
  or every voxel that differs from the background value) → [-1, 1], clipped. The MRI default.
- ``{"type": "window", "low": -1000, "high": 2000}``: a fixed range (CT window in HU, or per-dataset statistics
  recorded at training) → [-1, 1], clipped.
- ``{"type": "zscore"}``: zero mean, unit variance inside the foreground, not clipped; with ``"sigmas": k``, the
  foreground mean ± k standard deviations → [-1, 1], clipped (a range that, unlike the upper percentiles, a tumour or
  a lesion load barely moves: consistent brain levels across datasets).

Translations are mapped back to the target domain by a target spec: ``{"type": "window", ...}`` (fixed or per-dataset
range), ``{"type": "source"}`` (the inverse of the input's own mapping, for same-contrast tasks), or
``{"type": "histogram", "reference": PATH}`` (match the output's histogram to a reference target volume).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = [
    "SOURCE_TYPES",
    "TARGET_TYPES",
    "AffineIntensity",
    "fit_intensity",
    "background_value",
    "foreground_mask",
    "histogram_match",
    "histogram_match_batch",
    "validate_spec",
]

SOURCE_TYPES = ("percentile", "window", "zscore")
TARGET_TYPES = ("window", "source", "histogram")

_DEFAULTS: dict[str, dict[str, Any]] = {
    "percentile": {"lower": 1.0, "upper": 99.0},
    "window": {},
    "zscore": {},
    "source": {},
    "histogram": {},
}
_REQUIRED = {"window": ("low", "high"), "histogram": ("reference",)}


def validate_spec(spec: Mapping[str, Any], allowed: tuple[str, ...] = SOURCE_TYPES) -> dict[str, Any]:
    """Check a mapping spec and fill its defaults.

    Raises:
        ValueError: on an unknown type, missing or inconsistent parameters.
    """
    kind = spec.get("type")
    if kind not in allowed:
        raise ValueError(f"intensity type must be one of {allowed}, got {kind!r}")
    full = {"type": kind, **_DEFAULTS[kind], **{k: v for k, v in spec.items() if k != "type"}}
    missing = [k for k in _REQUIRED.get(kind, ()) if k not in full]
    if missing:
        raise ValueError(f"intensity type {kind!r} needs {missing}")
    if kind == "percentile" and not 0 <= full["lower"] < full["upper"] <= 100:
        raise ValueError(f"need 0 <= lower < upper <= 100, got {full['lower']}, {full['upper']}")
    if kind == "window" and not float(full["low"]) < float(full["high"]):
        raise ValueError(f"window needs low < high, got {full['low']}, {full['high']}")
    if kind == "zscore" and "sigmas" in full and not float(full["sigmas"]) > 0:
        raise ValueError(f"zscore sigmas must be positive, got {full['sigmas']}")
    return full


def background_value(volume: np.ndarray) -> float:
    """The median of the eight corner voxels: the background (air, or 0 after skull stripping) of nearly every scan."""
    corners = volume[np.ix_(*[[0, s - 1] for s in volume.shape])]
    return float(np.median(corners))


def foreground_mask(volume: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """The voxels intensity statistics are taken over.

    ``mask > 0`` when a mask is given; otherwise every voxel that differs from the background value (see
    :func:`background_value`), which is robust to the small negative rims interpolation leaves around skull-stripped
    brains (a "voxels above the minimum" rule would count the whole zero background as foreground there).

    Raises:
        ValueError: if the mask's shape differs from the volume's or the foreground is empty.
    """
    if mask is not None:
        fg = np.asarray(mask) > 0
        if fg.shape != volume.shape:
            raise ValueError(f"mask shape {fg.shape} differs from image shape {volume.shape}")
    else:
        tolerance = 1e-6 * float(volume.max() - volume.min())
        fg = np.abs(volume - background_value(volume)) > tolerance
    if not fg.any():
        raise ValueError("the foreground is empty: nothing to take intensity statistics from")
    return fg


@dataclass(frozen=True)
class AffineIntensity:
    """``y = scale·x + offset`` (clipped to [-1, 1] when ``clip``), and its inverse ``x = (y − offset) / scale``."""

    scale: float
    offset: float
    clip: bool = True

    @classmethod
    def from_range(cls, low: float, high: float) -> AffineIntensity:
        """Maps ``[low, high]`` onto ``[-1, 1]`` and clips."""
        if not high > low:
            raise ValueError(f"need high > low, got [{low}, {high}]")
        scale = 2.0 / (high - low)
        return cls(scale, -1.0 - low * scale, True)

    @property
    def range(self) -> tuple[float, float]:
        """The input values mapped to -1 and 1."""
        return float(self.inverse(np.float64(-1.0))), float(self.inverse(np.float64(1.0)))

    def forward(self, x: np.ndarray) -> np.ndarray:
        y = np.asarray(x, dtype=np.float32) * np.float32(self.scale) + np.float32(self.offset)
        return np.clip(y, -1.0, 1.0) if self.clip else y

    def inverse(self, y: np.ndarray) -> np.ndarray:
        return (np.asarray(y, dtype=np.float32) - np.float32(self.offset)) / np.float32(self.scale)

    def to_dict(self) -> dict[str, Any]:
        return {"scale": self.scale, "offset": self.offset, "clip": self.clip}


def fit_intensity(spec: Mapping[str, Any], volume: np.ndarray, mask: np.ndarray | None = None) -> AffineIntensity:
    """Fit a source mapping spec to one volume.

    Args:
        spec: ``percentile``, ``window`` or ``zscore`` spec (see module doc).
        volume: the image.
        mask: optional foreground mask (statistics are taken inside it).

    Returns:
        the fitted mapping.

    Raises:
        ValueError: on a bad spec, an empty foreground, or a degenerate (constant) foreground.
    """
    spec = validate_spec(spec, SOURCE_TYPES)
    if spec["type"] == "window":
        return AffineIntensity.from_range(float(spec["low"]), float(spec["high"]))
    values = volume[foreground_mask(volume, mask)].astype(np.float64)
    if spec["type"] == "percentile":
        low, high = np.percentile(values, [spec["lower"], spec["upper"]])
        if not high > low:
            raise ValueError(f"the {spec['lower']}th and {spec['upper']}th foreground percentiles are equal ({low})")
        return AffineIntensity.from_range(float(low), float(high))
    mean, std = float(values.mean()), float(values.std())
    if std == 0:
        raise ValueError("the foreground is constant: cannot z-score")
    if "sigmas" in spec:
        return AffineIntensity.from_range(mean - spec["sigmas"] * std, mean + spec["sigmas"] * std)
    return AffineIntensity(1.0 / std, -mean / std, clip=False)


def histogram_match(values: np.ndarray, reference: np.ndarray, mask: np.ndarray | None = None,
                    reference_mask: np.ndarray | None = None, num_quantiles: int = 1001) -> np.ndarray:
    """Monotone map of ``values`` so their foreground quantiles equal the reference's foreground quantiles.

    Voxels outside ``mask`` go through the same map (it is defined for every value), so the result stays monotone in
    the input everywhere.

    Args:
        values: array to map.
        reference: array whose distribution to copy.
        mask: foreground of ``values`` (every voxel when ``None``).
        reference_mask: foreground of ``reference`` (see :func:`foreground_mask` when ``None``).
        num_quantiles: quantiles matched.
    """
    q = np.linspace(0, 100, num_quantiles)
    src = np.percentile(values[mask > 0] if mask is not None else values, q)
    ref = np.percentile(reference[foreground_mask(reference, reference_mask)], q)
    src, idx = np.unique(src, return_index=True)  # np.interp needs increasing abscissae
    return np.interp(values, src, ref[idx]).astype(np.float32)


@torch.no_grad()
def histogram_match_batch(image: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Per sample and channel, ``image``'s foreground mapped monotonically onto ``reference``'s foreground quantiles;
    the background takes the reference's background value. The result has ``image``'s structure and order of
    intensities (its contrast) with ``reference``'s intensity distribution.

    The foreground is every voxel above the sample's minimum: in the network's range, where the default mappings clip
    the background to -1, that is the non-background. Tied voxels get one value (the quantile at their mean rank), so
    a flat region stays flat. Foreground sizes may differ between the two.

    Args:
        image: ``(B, C, *spatial)`` images to map.
        reference: ``(B, C, *spatial')`` images whose distributions to copy, sample by sample.
    """
    if image.shape[:2] != reference.shape[:2]:
        raise ValueError(f"batch and channels differ: {tuple(image.shape[:2])} and {tuple(reference.shape[:2])}")
    x_all, r_all = image.flatten(2).float(), reference.flatten(2).float()
    out = torch.empty_like(x_all)
    for b in range(x_all.shape[0]):
        for c in range(x_all.shape[1]):
            x, r = x_all[b, c], r_all[b, c]
            r_min = r.min()
            out[b, c] = r_min
            inside, r_inside = x > x.min(), r > r_min
            if not inside.any() or not r_inside.any():
                continue
            xs, quantiles = x[inside], r[r_inside].sort().values
            ordered = xs.sort().values
            rank = 0.5 * (torch.searchsorted(ordered, xs, side="left") + torch.searchsorted(ordered, xs, side="right") - 1)
            position = rank * (quantiles.numel() - 1) / max(xs.numel() - 1, 1)
            low = position.floor().long()
            high = (low + 1).clamp(max=quantiles.numel() - 1)
            out[b, c, inside] = torch.lerp(quantiles[low], quantiles[high], position - low)
    return out.view(image.shape).to(image.dtype)
