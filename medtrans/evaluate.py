"""``medtrans evaluate``: score translations against targets the way a careful reviewer would.

Protocol (documented in docs/evaluation.md):

1. Prediction and target must share a voxel grid (shape and affine), else the pair is refused.
2. Optional NEC protocol steps on the prediction: histogram matching to the target inside the mask, then a Gaussian of
   σ = 0.5 mm on both.
3. Intensity normalisation with a *fixed, documented* data range — never inferred from the prediction:
   ``target`` (default): both volumes scaled by the target's 1st–99th percentiles inside the mask to [0, 1] and
   clipped, data range 1; ``each``: each volume by its own mask percentiles (the protocol of the NEC paper and of
   the 2D anchor protocol of docs/results.md), data range 1; ``none``: raw values with ``--data-range`` given.
4. PSNR, SSIM (3D; and 2D per axial slice of the RAS volume, averaged over slices with mask voxels) and MAE inside the
   mask (or the whole volume), and ``texture``: the prediction's fine texture relative to the target's (the share of
   its variance a Gaussian of 1 voxel removes, over the target's; 1 = as much, above 1 = speckle the target lacks),
   taken on the raw volumes, before steps 2 and 3.

``--protocol synthrad`` scores a synthetic CT the way the SynthRAD challenges do, in HU (:class:`SynthradProtocol`,
:func:`evaluate_synthrad_pair`), inside the body mask: MAE in HU; PSNR (data range 4024) and MS-SSIM (its maps
averaged inside the mask at every scale) of both volumes clipped to [-1024, 3000] HU. Without ``--mask`` the body mask
is made from the CT target (:func:`body_mask`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.ndimage import gaussian_filter

from medtrans.data.intensity import foreground_mask, histogram_match
from medtrans.defaults import NORMALIZATIONS
from medtrans.errors import InputError
from medtrans.io import (
    Volume,
    check_input,
    check_same_grid,
    is_nifti,
    list_folder,
    read_volume,
)
from medtrans.metrics import mae, psnr, ssim, texture
from medtrans.synthrad import (
    SYNTHRAD_METRICS,
    SynthradProtocol,
    evaluate_synthrad_pair,
)

__all__ = [
    "NORMALIZATIONS",
    "EvaluationProtocol",
    "evaluate_pair",
    "evaluate_paths",
    "evaluate_synthrad_pair",
    "histogram_baselines",
    "match_to_pooled",
    "pooled_foreground",
    "summarize",
]

METRICS = ("psnr", "ssim3d", "ssim2d", "mae", "texture")
@dataclass
class EvaluationProtocol:
    """How predictions are scored.

    Attributes:
        normalization: ``"target"``, ``"each"`` or ``"none"`` (see module doc).
        lower: lower percentile of the normalisation.
        upper: upper percentile.
        data_range: required for ``normalization="none"`` (1 otherwise).
        histogram_match: match the prediction's histogram to the target's inside the mask first (NEC protocol).
        sigma_mm: Gaussian smoothing of both volumes in mm before scoring (NEC protocol: 0.5); 0 = off.
        ssim_kernel: SSIM window side (7; a Gaussian of σ 1.5).
    """

    normalization: str = "target"
    lower: float = 1.0
    upper: float = 99.0
    data_range: float | None = None
    histogram_match: bool = False
    sigma_mm: float = 0.0
    ssim_kernel: int = 7

    def __post_init__(self) -> None:
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {self.normalization!r}")
        if not (math.isfinite(self.lower) and math.isfinite(self.upper) and 0 <= self.lower < self.upper <= 100):
            raise ValueError(f"percentiles must satisfy 0 <= lower < upper <= 100, got {self.lower:g}, {self.upper:g}")
        if not (math.isfinite(self.sigma_mm) and self.sigma_mm >= 0):
            raise ValueError(f"sigma_mm must be a finite number >= 0, got {self.sigma_mm:g}")
        if self.normalization == "none" and not (self.data_range and math.isfinite(self.data_range)
                                                 and self.data_range > 0):
            raise ValueError("normalization 'none' needs a positive, finite data_range")
        if self.normalization != "none":
            self.data_range = 1.0

    @classmethod
    def nec(cls) -> EvaluationProtocol:
        """The NEC paper's protocol: histogram matching, σ = 0.5 mm, per-volume percentile normalisation."""
        return cls(normalization="each", histogram_match=True, sigma_mm=0.5)


def _scale(x: np.ndarray, ref: np.ndarray, mask: np.ndarray, lower: float, upper: float, ref_path: Path,
           mask_path: Path | None) -> np.ndarray:
    """``x`` scaled by ``ref``'s percentiles inside ``mask`` to [0, 1] and clipped.

    Raises:
        InputError: naming ``ref_path`` (and the mask), when those percentiles are equal: ``ref`` is flat there.
    """
    low, high = np.percentile(ref[mask], [lower, upper])
    if not high > low:
        where = (f"inside the mask {mask_path} ({int(mask.sum())} voxels)" if mask_path is not None
                 else "over the whole volume")
        raise InputError(ref_path, f"is flat {where}: its {lower:g}th and {upper:g}th percentiles there are both "
                                   f"{low:g}, so it cannot be scaled to [0, 1]; use a mask over varied tissue")
    return np.clip((x - low) / (high - low), 0.0, 1.0)


def evaluate_pair(pred: Volume, target: Volume, mask: Volume | None = None,
                  protocol: EvaluationProtocol | None = None) -> dict[str, float]:
    """Score one prediction against its target.

    Raises:
        InputError: when the grids differ, the mask is empty or a single voxel, or a volume the normalisation scales
            by is flat inside the mask.
    """
    protocol = protocol or EvaluationProtocol()
    check_same_grid(pred, target, mask)
    m = mask.data > 0 if mask is not None else np.ones(pred.data.shape, bool)
    if not m.any():
        raise InputError(mask.path, "mask is empty")
    if mask is not None and m.sum() < 2:
        raise InputError(mask.path, "mask is a single voxel: nothing to score (no spread to normalise, no "
                                    "neighbourhood for SSIM)")
    mask_path = mask.path if mask is not None else None
    p, t = pred.data.astype(np.float64), target.data.astype(np.float64)
    try:  # scale-free: before any matching, smoothing or normalisation
        fine = texture(p, t, m)
    except ValueError:  # a mask too thin to look inside, or a target without texture
        fine = math.nan
    if protocol.histogram_match:
        p = histogram_match(p, t, mask=m, reference_mask=m).astype(np.float64)
    if protocol.sigma_mm > 0:
        sigma = [protocol.sigma_mm / s for s in pred.spacing]
        p, t = gaussian_filter(p, sigma), gaussian_filter(t, sigma)
    bounds = (protocol.lower, protocol.upper)
    if protocol.normalization == "target":
        p, t = (_scale(p, t, m, *bounds, target.path, mask_path), _scale(t, t, m, *bounds, target.path, mask_path))
    elif protocol.normalization == "each":
        p, t = (_scale(p, p, m, *bounds, pred.path, mask_path), _scale(t, t, m, *bounds, target.path, mask_path))
    # mask-outside voxels are set equal so that SSIM windows at the mask border see the background as agreeing
    p = np.where(m, p, t)
    dr = float(protocol.data_range)
    axial = pred.axial_axis
    slices = [i for i in range(p.shape[axial]) if np.take(m, i, axis=axial).sum() > 0
              and min(np.take(m, i, axis=axial).shape) >= protocol.ssim_kernel]
    ssim2d = []
    for i in slices:
        mi = np.take(m, i, axis=axial)
        half = protocol.ssim_kernel // 2
        if not mi[half:-half, half:-half].any():
            continue
        ssim2d.append(ssim(np.take(p, i, axis=axial), np.take(t, i, axis=axial), dr, mi, protocol.ssim_kernel))
    return {
        "psnr": psnr(p, t, dr, m),
        "ssim3d": ssim(p, t, dr, m, protocol.ssim_kernel),
        "ssim2d": float(np.mean(ssim2d)) if ssim2d else math.nan,
        "mae": mae(p, t, m),
        "texture": fine,
    }


def pooled_foreground(paths: list[str | Path]) -> np.ndarray:
    """Foreground intensities of several volumes in one array (the target distribution of the baselines)."""
    return np.concatenate([v.data[foreground_mask(v.data)] for v in map(read_volume, paths)])


def match_to_pooled(volume: np.ndarray, mask: np.ndarray, pooled: np.ndarray) -> np.ndarray:
    """``volume``'s histogram inside ``mask`` matched to ``pooled`` target intensities (see :func:`pooled_foreground`);
    0 outside ``mask``. The baselines below, and any translation that is to be scored after the same matching."""
    return np.where(mask, histogram_match(volume, pooled, mask, np.ones_like(pooled, dtype=bool)), 0)


def histogram_baselines(source: np.ndarray, mask: np.ndarray, pooled: np.ndarray) -> dict[str, np.ndarray]:
    """Translations that need no training: the source histogram-matched to ``pooled`` target intensities, plainly and
    after a contrast inversion (a T1→T2 translator must beat the latter to have learned more than an inversion).
    Outside ``mask`` both are 0."""
    inverted = np.where(mask, source.max() - source, 0)
    return {
        "histogram-matched input": match_to_pooled(source, mask, pooled),
        "inverted + histogram-matched input": match_to_pooled(inverted, mask, pooled),
    }


def _subject(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".nii"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _match(pred: Path, target: Path, mask: Path | None) -> list[tuple[str, Path, Path, Path | None]]:
    for path in (pred, target, mask):
        if path is not None:
            check_input(path)  # exists, and a file or a folder: never a FIFO or a device
    if pred.is_file():
        if not target.is_file():
            raise InputError(target, "prediction is a file, so the target must be a file")
        if mask is not None and not mask.is_file():
            raise InputError(mask, "--mask is a folder, but the prediction is one file: give one mask file (a folder "
                                   "of same-named masks goes with folders of predictions and targets)")
        return [(_subject(pred), pred, target, mask)]
    preds = [p for p in list_folder(pred) if is_nifti(p)]
    if not preds:
        raise InputError(pred, "holds no NIfTI prediction")
    targets = {_subject(p): p for p in list_folder(target) if is_nifti(p)} if target.is_dir() else {}
    masks = {_subject(p): p for p in list_folder(mask) if is_nifti(p)} if mask is not None and mask.is_dir() else {}
    out = []
    for p in preds:
        sid = _subject(p)
        if sid not in targets:
            raise InputError(p, f"has no target named {sid}.nii[.gz] in {target}")
        m = masks.get(sid) if mask is not None and mask.is_dir() else mask
        if mask is not None and mask.is_dir() and m is None:
            raise InputError(p, f"has no mask named {sid}.nii[.gz] in {mask}")
        out.append((sid, p, targets[sid], m))
    return out


def evaluate_paths(pred: str | Path, target: str | Path, mask: str | Path | None = None,
                   protocol: EvaluationProtocol | SynthradProtocol | None = None) -> pd.DataFrame:
    """Score a prediction file or folder against a target file or folder (matched by file name).

    Returns:
        one row per subject: ``subject`` and :data:`METRICS` (``psnr``, ``ssim3d``, ``ssim2d``, ``mae``,
        ``texture``), or with a :class:`SynthradProtocol` :data:`SYNTHRAD_METRICS` (``mae``, ``psnr``, ``ms_ssim``).
    """
    synthrad = isinstance(protocol, SynthradProtocol)
    score = evaluate_synthrad_pair if synthrad else evaluate_pair
    rows = []
    for sid, p, t, m in _match(Path(pred), Path(target), Path(mask) if mask is not None else None):
        scores = score(read_volume(p), read_volume(t), read_volume(m, allow_constant=True) if m is not None else None, protocol)
        rows.append({"subject": sid, **scores})
    return pd.DataFrame(rows, columns=["subject", *(SYNTHRAD_METRICS if synthrad else METRICS)])


def summarize(table: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation (ddof 1; 0 for one subject) of each metric column (of :data:`METRICS` or
    :data:`SYNTHRAD_METRICS`, in the table's order); infinite PSNRs stay infinite."""
    stats = {}
    for metric in (c for c in table.columns if c in {*METRICS, *SYNTHRAD_METRICS}):
        values = table[metric].to_numpy(dtype=float)
        with np.errstate(invalid="ignore"):
            stats[metric] = {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0}
    return pd.DataFrame(stats).T


def describe(protocol: EvaluationProtocol | SynthradProtocol, masked: bool) -> str:
    """One line stating how scores were computed (printed with them)."""
    if isinstance(protocol, SynthradProtocol):
        return protocol.describe(masked)
    steps = []
    if protocol.histogram_match:
        steps.append("prediction histogram-matched to the target")
    if protocol.sigma_mm > 0:
        steps.append(f"Gaussian σ {protocol.sigma_mm:g} mm on both")
    scale = {
        "target": f"both scaled by the target's {protocol.lower:g}–{protocol.upper:g}th percentiles to [0, 1] (clipped)",
        "each": f"each scaled by its own {protocol.lower:g}–{protocol.upper:g}th percentiles to [0, 1] (clipped)",
        "none": "raw values",
    }[protocol.normalization]
    where = "inside the mask" if masked else "over the whole volume"
    return "; ".join([*steps, scale, f"data range {protocol.data_range:g}", where])
