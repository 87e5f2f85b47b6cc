"""``medtrans evaluate``: score translations against targets the way a careful reviewer would.

Protocol (documented in docs/evaluation.md):

1. Prediction and target must share a voxel grid (shape and affine), else the pair is refused.
2. Optional NEC protocol steps on the prediction: histogram matching to the target inside the mask, then a Gaussian of
   σ = 0.5 mm on both.
3. Intensity normalisation with a *fixed, documented* data range — never inferred from the prediction:
   ``target`` (default): both volumes scaled by the target's 1st–99th percentiles inside the mask to [0, 1] and
   clipped, data range 1; ``each``: each volume by its own mask percentiles (the protocol of the NEC paper and of
   docs/benchmarks.md's reference protocol), data range 1; ``none``: raw values with ``--data-range`` given.
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
from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage
from scipy.ndimage import gaussian_filter

from medtrans.data.intensity import foreground_mask, histogram_match
from medtrans.defaults import NORMALIZATIONS
from medtrans.errors import InputError
from medtrans.io import (Volume, atomic_write_many, check_input, check_outputs, check_writable, is_nifti, list_folder,
                         read_volume)
from medtrans.metrics import MS_SSIM_WEIGHTS, mae, ms_ssim, psnr, ssim, texture

__all__ = [
    "NORMALIZATIONS",
    "EvaluationProtocol",
    "SynthradProtocol",
    "body_mask",
    "evaluate_pair",
    "evaluate_paths",
    "evaluate_synthrad_pair",
    "histogram_baselines",
    "match_to_pooled",
    "pooled_foreground",
    "run_evaluate",
    "summarize",
]

METRICS = ("psnr", "ssim3d", "ssim2d", "mae", "texture")
SYNTHRAD_METRICS = ("mae", "psnr", "ms_ssim")
"""The columns of ``--protocol synthrad``, named as the SynthRAD challenges name them."""

HU_RANGE = (-1024.0, 3000.0)
"""SynthRAD's HU range: PSNR and MS-SSIM clip both volumes to it, and its width (4024 HU) is PSNR's data range (the
range of SynthRAD 2023 and of SynthRAD 2025's first evaluation code; its later code clips to [-1024, 3071]:
``--hu-range -1024 3071``). MAE is taken on the unclipped HU, as SynthRAD's code takes it."""
BODY_THRESHOLD_HU = -500.0
"""The body mask made from a CT: voxels above this (air is about -1000 HU, fat -100, lung -500 to -900)..."""
BODY_DILATION_MM = 5.0
"""...in its largest connected component, holes filled, dilated by this many mm (the skin's edge stays inside)."""
HU_MIN_SPAN = 500.0
"""A volume whose values span less than this many HU (max − min) is refused as not a CT in HU: a prediction left in
the network's [-1, 1], or scaled to [0, 1] or [0, 255]. A CT spans air near -1000 HU to bone above +300."""
MS_SSIM_KERNEL = 11
"""MS-SSIM's Gaussian window side (σ 1.5; Wang et al. 2003, MONAI's ``MultiScaleSSIMMetric``)."""
MS_SSIM_SIGMA = 1.5


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


@dataclass(frozen=True)
class SynthradProtocol:
    """How synthetic CTs are scored in HU, the SynthRAD way (see :func:`evaluate_synthrad_pair`).

    Attributes:
        low: lower end of the HU range PSNR and MS-SSIM clip both volumes to.
        high: upper end; ``high - low`` is PSNR's data range.
        body_threshold: HU above which a target voxel is body, for the mask made when none is given.
        body_dilation_mm: that mask's dilation in mm.
        ms_ssim_kernel: MS-SSIM's window side (Gaussian, σ :data:`MS_SSIM_SIGMA`).
    """

    low: float = HU_RANGE[0]
    high: float = HU_RANGE[1]
    body_threshold: float = BODY_THRESHOLD_HU
    body_dilation_mm: float = BODY_DILATION_MM
    ms_ssim_kernel: int = MS_SSIM_KERNEL

    def __post_init__(self) -> None:
        if not (math.isfinite(self.low) and math.isfinite(self.high) and self.low < self.high):
            raise ValueError(f"the HU range needs finite LOW < HIGH, got {self.low:g}, {self.high:g}")
        if not self.low < self.body_threshold < self.high:
            raise ValueError(f"the body threshold {self.body_threshold:g} HU must lie inside the HU range "
                             f"[{self.low:g}, {self.high:g}]")
        if not (math.isfinite(self.body_dilation_mm) and self.body_dilation_mm >= 0):
            raise ValueError(f"body_dilation_mm must be a finite number >= 0, got {self.body_dilation_mm:g}")

    @property
    def data_range(self) -> float:
        return self.high - self.low


def body_mask(ct: np.ndarray, spacing: tuple[float, ...] = (1.0, 1.0, 1.0), axial: int = 2,
              threshold: float = BODY_THRESHOLD_HU, dilation_mm: float = BODY_DILATION_MM) -> np.ndarray:
    """The body in a CT (HU): voxels above ``threshold``, their largest connected component (face-connected: the
    couch and anything else the body does not touch fall away), holes filled in 3D and in every slice across
    ``axial`` (air in the airways, sinuses and bowel, open to the outside in 3D, closed within a slice), dilated by
    ``dilation_mm`` (an ellipsoid in mm, from the exact distance to the body, so anisotropic voxels dilate alike).

    Raises:
        ValueError: when no voxel lies above ``threshold`` (no body), or the body fills the whole volume (no air
            around it to tell it from: a CT cropped to the body, or a volume that is not in HU).
    """
    above = np.asarray(ct) > threshold
    if not above.any():
        raise ValueError(f"no voxel lies above {threshold:g} HU: no body to make a mask of")
    labels, count = ndimage.label(above)
    body = labels == (np.argmax(np.bincount(labels.ravel())[1:]) + 1) if count > 1 else above
    body = ndimage.binary_fill_holes(body)
    for i in range(body.shape[axial]):
        index = [slice(None)] * body.ndim
        index[axial] = i
        body[tuple(index)] = ndimage.binary_fill_holes(body[tuple(index)])
    if body.all():
        raise ValueError(f"the body fills the whole volume: no air around the body (at or below {threshold:g} HU) to "
                         "tell it from (a CT cropped to the body, or a volume not in HU)")
    if dilation_mm > 0:
        body = ndimage.distance_transform_edt(~body, sampling=spacing) <= dilation_mm
    return body


def _axial_axis(affine: np.ndarray) -> int:
    """The voxel axis closest to superior–inferior."""
    return int(np.argmax(np.abs(np.asarray(affine)[2, :3])))


def _check_hu(volume: Volume, role: str) -> None:
    low, high = float(volume.data.min()), float(volume.data.max())
    if high - low < HU_MIN_SPAN:
        raise InputError(volume.path, f"spans only {low:g} to {high:g}: not a CT in HU (a CT spans air near -1000 HU "
                                      f"to bone above +300), which --protocol synthrad scores; "
                                      + ("was it mapped back to HU (medtrans translate does so for a model trained "
                                         "with a 'window' intensity for CT)?" if role == "prediction" else
                                         "give the CT as TARGET"))


def evaluate_synthrad_pair(pred: Volume, target: Volume, mask: Volume | None = None,
                           protocol: SynthradProtocol | None = None) -> dict[str, float]:
    """Score a synthetic CT against its CT, in HU, the SynthRAD way.

    Inside the mask (``mask > 0``; without one, :func:`body_mask` of the target): ``mae``, the mean absolute error
    in HU, of the volumes as they are (as SynthRAD's code takes it: a 5000 HU prediction in 1000 HU bone is 4000 HU
    off); and of both volumes clipped to ``[protocol.low, protocol.high]`` HU, ``psnr`` = 10 log10(range² / MSE) with
    range ``high − low`` (4024), and ``ms_ssim`` (:func:`~medtrans.metrics.ms_ssim`: 5 scales, Gaussian window 11,
    σ 1.5) of the clipped volumes set to ``low`` outside the mask and mapped to [0, 1] (data range 1), its maps
    averaged inside the mask at every scale.

    Raises:
        InputError: when the grids differ, the mask is empty, a volume does not look like a CT in HU (values spanning
            less than :data:`HU_MIN_SPAN`), or the target has no body, or no air around it, to make a mask from.
    """
    protocol = protocol or SynthradProtocol()
    _check_grid(pred, target, mask)
    _check_hu(target, "target")
    _check_hu(pred, "prediction")
    if mask is not None:
        m = mask.data > 0
        if not m.any():
            raise InputError(mask.path, "mask is empty")
    else:
        try:
            m = body_mask(target.data, target.spacing, _axial_axis(target.affine), protocol.body_threshold,
                          protocol.body_dilation_mm)
        except ValueError as err:
            raise InputError(target.path, f"{err}; give the body mask with --mask") from None
    low, high = protocol.low, protocol.high
    raw_p, raw_t = pred.data.astype(np.float64), target.data.astype(np.float64)
    p, t = np.clip(raw_p, low, high), np.clip(raw_t, low, high)
    unit = lambda x: np.where(m, (x - low) / (high - low), 0.0)  # noqa: E731 - low HU outside the mask, in both
    return {
        "mae": mae(raw_p, raw_t, m),
        "psnr": psnr(p, t, protocol.data_range, m),
        "ms_ssim": ms_ssim(unit(p), unit(t), 1.0, m, protocol.ms_ssim_kernel, MS_SSIM_SIGMA, MS_SSIM_WEIGHTS),
    }


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


def _check_grid(pred: Volume, target: Volume, mask: Volume | None) -> None:
    for other in (target, mask):
        if other is None:
            continue
        if other.data.shape != pred.data.shape:
            raise InputError(other.path, f"shape {other.data.shape} differs from the prediction {pred.path}'s "
                                         f"{pred.data.shape}; shape and affine must be identical (resample first)")
        if not np.allclose(other.affine, pred.affine, atol=1e-3):
            fmt = lambda a: np.array2string(np.asarray(a)[:3], precision=3, suppress_small=True, separator=",").replace("\n", "")  # noqa: E731
            raise InputError(other.path, f"affine {fmt(other.affine)} differs from the prediction {pred.path}'s "
                                         f"{fmt(pred.affine)}; shape and affine must be identical (resample first)")


def evaluate_pair(pred: Volume, target: Volume, mask: Volume | None = None,
                  protocol: EvaluationProtocol | None = None) -> dict[str, float]:
    """Score one prediction against its target.

    Raises:
        InputError: when the grids differ, the mask is empty or a single voxel, or a volume the normalisation scales
            by is flat inside the mask.
    """
    protocol = protocol or EvaluationProtocol()
    _check_grid(pred, target, mask)
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
    axial = _axial_axis(pred.affine)
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
        where = ("inside the mask" if masked else
                 f"inside the body mask made from the target (> {protocol.body_threshold:g} HU, largest component, "
                 f"holes filled, dilated {protocol.body_dilation_mm:g} mm)")
        return (f"MAE in HU; PSNR with data range {protocol.data_range:g} and MS-SSIM ({len(MS_SSIM_WEIGHTS)} scales, "
                f"Gaussian window {protocol.ms_ssim_kernel}, sigma {MS_SSIM_SIGMA:g}; {protocol.low:g} HU outside the "
                f"mask) of both clipped to [{protocol.low:g}, {protocol.high:g}] HU; {where}")
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


_SETS = {"nec": "--normalization each --histogram-match --sigma-mm 0.5 (percentiles 1 99)",
         "synthrad": "HU, clipped to --hu-range for PSNR and MS-SSIM; no normalisation, smoothing or matching"}
"""What each named protocol fixes, for the line refusing an option it fixes."""


def _protocol(args: Any) -> EvaluationProtocol | SynthradProtocol:
    """The protocol the options ask for; an option a named protocol fixes itself, or one that belongs to another
    protocol, is refused naming it (never silently ignored)."""
    tuning = {"--normalization": args.normalization, "--percentiles": args.percentiles,
              "--data-range": args.data_range, "--histogram-match": args.histogram_match or None,
              "--sigma-mm": args.sigma_mm}
    hu_range = getattr(args, "hu_range", None)
    if args.protocol in _SETS:
        given = next((option for option, value in tuning.items() if value is not None), None)
        if given is not None:
            raise InputError(given, f"cannot be combined with --protocol {args.protocol}, which fixes its own "
                                    f"settings ({_SETS[args.protocol]}); leave {given} out")
    if hu_range is not None and args.protocol != "synthrad":
        raise InputError("--hu-range", f"applies to --protocol synthrad only, not --protocol {args.protocol}")
    if args.protocol == "synthrad":
        try:
            return SynthradProtocol(*(hu_range or HU_RANGE))
        except ValueError as err:
            raise InputError("--hu-range", str(err)) from None
    if args.protocol == "nec":
        return EvaluationProtocol.nec()
    try:
        return EvaluationProtocol(args.normalization or "target", *(args.percentiles or (1.0, 99.0)), args.data_range,
                                  args.histogram_match, args.sigma_mm or 0.0)
    except ValueError as err:
        raise InputError("--normalization", str(err)) from err


def run_evaluate(args: Any) -> int:
    """Body of ``medtrans evaluate``."""
    protocol = _protocol(args)
    outputs = []
    if args.csv is not None:
        outputs = [args.csv, args.csv.with_name(args.csv.stem + "_summary.csv")]
        check_outputs([(path, "--csv") for path in outputs],
                      [(args.prediction, "PREDICTION"), (args.target, "TARGET"), (args.mask, "--mask")])
        for path in outputs:
            check_writable(path)
    table = evaluate_paths(args.prediction, args.target, args.mask, protocol)
    summary = summarize(table)
    with pd.option_context("display.float_format", "{:.4f}".format, "display.width", 120):
        print(table.to_string(index=False))
    print(f"\nprotocol ({args.protocol}): {describe(protocol, args.mask is not None)}")
    if len(table) > 1:
        print(f"mean ± std over {len(table)} subjects:")
        for metric, row in summary.iterrows():
            print(f"  {metric:7s} {row['mean']:.4f} ± {row['std']:.4f}")
    if outputs:  # the table and its summary: both or neither
        atomic_write_many([(outputs[0], lambda tmp: table.to_csv(tmp, index=False)),
                           (outputs[1], lambda tmp: summary.to_csv(tmp, index_label="metric"))])
    return 0
