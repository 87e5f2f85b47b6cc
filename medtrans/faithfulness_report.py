"""Region-level report of invented and erased structure, calibrated on real co-registered pairs.

The per-voxel maps of :mod:`medtrans.faithfulness` light up wherever two contrasts differ, which a correct translation
does everywhere. The report asks a narrower question, region by region: *does the output hold a compact region that
the source does not explain, or the source one that the output does not?*

1. **Conditional residuals.** Inside the brain, the output's intensities are binned by the source's intensity (equal
   quantile bins); each bin's median and robust spread (1.4826 × MAD) give ``z_invented = (output − median) / spread``:
   how far each voxel lies from what voxels of the *same source intensity* look like in this output. ``z_erased`` is
   the same with the roles swapped. The mapping is learned from the pair itself, so any tissue-wise intensity map
   (a contrast inversion, T1 → T2's reordering) reads 0; a lesion the output invented, or one of the source's that it
   erased, does not follow the volume's own map.
2. **Region scale.** Each residual is averaged by a Gaussian of ``sigma_mm`` (normalised inside the brain), so noise
   and one-voxel edge effects average out and a lesion-sized region's residual, coherent in sign, remains.
3. **Calibration.** Each score is divided by its threshold (:data:`medtrans.defaults.FAITHFULNESS_CALIBRATION` or a
   JSON file written by ``benchmarks/faithfulness_regions.py``): the largest value the averaged residual reached
   in the normal tissue of real co-registered pairs of the task — what a *correct* translation shows.
4. **Regions.** Connected voxels above half the threshold that reach the threshold somewhere, at least
   ``border_mm`` inside the brain, of at least ``min_volume_mm3``: each one reported with its kind (``invented``
   when the output has more blob-scale structure of its own there than the source — a difference of Gaussians of
   each image, in units of its own spread — else ``erased``), size, centre in world coordinates, peak and mean
   score.

Every function works on 2D and 3D arrays.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from medtrans.defaults import FAITHFULNESS_CALIBRATION
from medtrans.errors import InputError

__all__ = ["CALIBRATION_KEYS", "REPORT_SUFFIXES", "check_calibration", "find_regions", "load_calibration",
           "faithfulness_report", "region_outlines", "report_montage", "report_paths", "report_text", "report_writes",
           "residual_scores", "structure_maps", "voxel_spacing"]

CALIBRATION_KEYS = ("sigma_mm", "border_mm", "min_volume_mm3", "bins", "thresholds")
"""The fields a calibration must hold (``thresholds``: ``{"invented": t, "erased": t}``); others are provenance."""
REPORT_SUFFIXES = (".json", ".csv")
_FIELDS = ("kind", "polarity", "voxels", "volume_mm3", "radius_mm", "centre_x", "centre_y", "centre_z", "peak", "mean")


def check_calibration(calibration: Any, where: str | Path) -> dict[str, Any]:
    """The calibration, checked: every key of :data:`CALIBRATION_KEYS`, positive finite numbers, ``bins`` ≥ 2.

    Raises:
        InputError: naming ``where`` and the first problem found.
    """
    if not isinstance(calibration, Mapping):
        raise InputError(where, "faithfulness calibration must be a JSON object")
    missing = [k for k in CALIBRATION_KEYS if k not in calibration]
    if missing:
        raise InputError(where, f"faithfulness calibration lacks {', '.join(missing)}")
    thresholds = calibration["thresholds"]
    if not isinstance(thresholds, Mapping) or set(thresholds) < {"invented", "erased"}:
        raise InputError(where, "faithfulness calibration's thresholds must hold 'invented' and 'erased'")
    numbers = {k: calibration[k] for k in CALIBRATION_KEYS[:-1]}
    numbers.update({f"thresholds.{k}": thresholds[k] for k in ("invented", "erased")})
    for key, value in numbers.items():
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if not ok or value < 0 or (value == 0 and key not in ("border_mm", "min_volume_mm3")):
            raise InputError(where, f"faithfulness calibration's {key} must be a positive number, got {value!r}")
    if calibration["bins"] != int(calibration["bins"]) or calibration["bins"] < 2:
        raise InputError(where, f"faithfulness calibration's bins must be an integer ≥ 2, got {calibration['bins']!r}")
    return dict(calibration)


def load_calibration(path: str | Path | None) -> dict[str, Any]:
    """The calibration in the JSON file ``path`` (checked), or the built-in one when ``path`` is ``None``.

    Raises:
        InputError: naming the file, when it cannot be read, is not JSON or is not a calibration.
    """
    if path is None:
        return dict(FAITHFULNESS_CALIBRATION)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(path, f"cannot read the faithfulness calibration ({err.__class__.__name__})") from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise InputError(path, f"faithfulness calibration is not JSON ({err.msg}, line {err.lineno})") from None
    return check_calibration(value, path)


def voxel_spacing(affine: np.ndarray) -> tuple[float, ...]:
    """Voxel sizes in mm: the column norms of an ``(N+1) × (N+1)`` affine's linear part."""
    affine = np.asarray(affine, dtype=np.float64)
    return tuple(float(v) for v in np.linalg.norm(affine[:-1, :-1], axis=0))


def _conditional_residual(x: np.ndarray, y: np.ndarray, mask: np.ndarray, bins: int) -> np.ndarray:
    """``(y − median(y | bin of x)) / spread(y | bin of x)`` inside ``mask``, 0 outside; bins are x's quantiles."""
    edges = np.unique(np.quantile(x[mask], np.linspace(0, 1, bins + 1)))
    which = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, max(len(edges) - 2, 0))
    inside, values = which[mask], y[mask]
    order = np.argsort(inside, kind="stable")
    cuts = np.searchsorted(inside[order], np.arange(len(edges)))
    sorted_values = values[order]
    centre = np.zeros(len(edges), np.float64)
    spread = np.ones(len(edges), np.float64)
    scale = max(float(np.percentile(values, 99) - np.percentile(values, 1)), 1e-6)
    for i in range(len(edges) - 1):
        chunk = sorted_values[cuts[i]:cuts[i + 1]]
        if chunk.size:
            centre[i] = np.median(chunk)
            spread[i] = max(1.4826 * float(np.median(np.abs(chunk - centre[i]))), 0.01 * scale)
    return np.where(mask, (y - centre[which]) / spread[which], 0.0).astype(np.float32)


def residual_scores(source: np.ndarray, output: np.ndarray, mask: np.ndarray, spacing: tuple[float, ...],
                    sigma_mm: float, bins: int) -> dict[str, np.ndarray]:
    """The region-scale conditional residuals (signed, uncalibrated) ``{"invented", "erased"}``, 0 outside ``mask``.

    Args:
        source: the translation's input, any intensity units.
        output: the translation, on the same grid.
        mask: the brain (or foreground) where both are compared.
        spacing: voxel sizes in mm, one per axis.
        sigma_mm: the Gaussian that averages the residuals, in mm.
        bins: quantile bins of the conditioning intensity.

    Raises:
        ValueError: when the shapes differ or the mask is empty.
    """
    if source.shape != output.shape or mask.shape != source.shape:
        raise ValueError(f"source {source.shape}, output {output.shape} and mask {mask.shape} shapes differ")
    if not mask.any():
        raise ValueError("the mask is empty")
    box = ndimage.find_objects(mask.astype(np.uint8))[0]  # the work is done on the mask's bounding box
    s, o, m = (np.asarray(a[box], dtype=np.float32) for a in (source, output, mask))
    m = m > 0
    sigma = [sigma_mm / max(d, 1e-6) for d in spacing]
    weight = np.maximum(ndimage.gaussian_filter(m.astype(np.float32), sigma), 1e-3)
    scores = {}
    for kind, (x, y) in {"invented": (s, o), "erased": (o, s)}.items():
        z = ndimage.gaussian_filter(_conditional_residual(x, y, m, bins), sigma) / weight
        full = np.zeros(source.shape, np.float32)
        full[box] = np.where(m, z, 0)
        scores[kind] = full
    return scores


def structure_maps(source: np.ndarray, output: np.ndarray, mask: np.ndarray, spacing: tuple[float, ...],
                   sigma_mm: float) -> dict[str, np.ndarray]:
    """Each image's own blob-scale structure: ``|G_σ * x − G_3σ * x|`` (averages inside ``mask``), in units of its
    robust spread over ``mask`` — ``invented`` for the output, ``erased`` for the source. A region's kind is the image
    whose own structure is stronger there: a spot the output has and the source lacks was invented."""
    box = ndimage.find_objects(mask.astype(np.uint8))[0]
    m = mask[box] > 0
    weight = m.astype(np.float32)
    out = {}
    for kind, image in (("invented", output), ("erased", source)):
        x = np.where(m, np.asarray(image[box], np.float32), 0)
        blur = [ndimage.gaussian_filter(x, [f * sigma_mm / d for d in spacing]) /
                np.maximum(ndimage.gaussian_filter(weight, [f * sigma_mm / d for d in spacing]), 1e-3) for f in (1, 3)]
        dog = np.abs(blur[0] - blur[1])
        full = np.zeros(mask.shape, np.float32)
        full[box] = np.where(m, dog / max(1.4826 * float(np.median(dog[m])), 1e-6), 0)
        out[kind] = full
    return out


def find_regions(scores: Mapping[str, np.ndarray], mask: np.ndarray, affine: np.ndarray,
                 calibration: Mapping[str, Any], structure: Mapping[str, np.ndarray] | None = None
                 ) -> tuple[list[dict[str, Any]], np.ndarray]:
    """The calibrated regions of :func:`residual_scores`' output, largest peak first, and their label image.

    Args:
        scores: signed residuals ``{"invented", "erased"}``.
        mask: the brain the scores were computed in.
        affine: ``(N+1) × (N+1)`` voxel-to-world affine (mm).
        calibration: a checked calibration.
        structure: :func:`structure_maps`; a region's kind is the image with more structure of its own in it (the
            output: invented; the source: erased). Without them, the larger calibrated score at its peak.

    Returns:
        the regions (dicts with the keys of the CSV report) and an int32 label image (region ``i`` has label ``i + 1``).
    """
    spacing = voxel_spacing(affine)
    thresholds = calibration["thresholds"]
    normed = {k: np.abs(scores[k]) / float(thresholds[k]) for k in ("invented", "erased")}
    combined = np.maximum(normed["invented"], normed["erased"])
    inner = mask > 0
    if calibration["border_mm"] > 0:
        distance = ndimage.distance_transform_edt(np.pad(inner, 1), sampling=spacing)[(slice(1, -1),) * mask.ndim]
        inner = distance > float(calibration["border_mm"])
    combined = np.where(inner, combined, 0)
    labels, count = ndimage.label(combined >= 0.5)
    voxel_mm3 = float(np.prod(spacing))
    regions, kept = [], np.zeros(labels.shape, np.int32)
    for index, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        here = labels[box] == index
        values = combined[box][here]
        if values.max() < 1 or here.sum() * voxel_mm3 < float(calibration["min_volume_mm3"]):
            continue
        peak = np.unravel_index(np.argmax(np.where(here, combined[box], -1)), here.shape)
        if structure is not None:
            core = here & (combined[box] >= 1)  # where the region passes the threshold
            mine, theirs = structure["invented"][box][core].mean(), structure["erased"][box][core].mean()
            kind = "invented" if mine >= theirs else "erased"
        else:
            kind = "invented" if normed["invented"][box][peak] >= normed["erased"][box][peak] else "erased"
        coords = np.argwhere(here) + [s.start for s in box]
        weights = values - 0.5 + 1e-6  # the region's core counts most
        centre = np.asarray(affine, np.float64) @ np.append((coords * weights[:, None]).sum(0) / weights.sum(), 1.0)
        volume = float(here.sum() * voxel_mm3)
        radius = (3 * volume / (4 * math.pi)) ** (1 / 3) if mask.ndim == 3 else math.sqrt(volume / math.pi)
        sign = float(scores["invented"][box][peak])
        world = [*(float(c) for c in centre[:-1]), *([0.0] * (3 - mask.ndim))]
        regions.append({"kind": kind, "polarity": "brighter" if sign > 0 else "darker", "voxels": int(here.sum()),
                        "volume_mm3": round(volume, 2), "radius_mm": round(radius, 2),
                        "centre_x": round(world[0], 2), "centre_y": round(world[1], 2), "centre_z": round(world[2], 2),
                        "peak": round(float(values.max()), 3), "mean": round(float(values.mean()), 3),
                        "_box": box, "_here": here})
    regions.sort(key=lambda r: -r["peak"])
    for number, region in enumerate(regions, start=1):
        kept[region.pop("_box")][region.pop("_here")] = number
    return regions, kept


def faithfulness_report(source: np.ndarray, output: np.ndarray, mask: np.ndarray, affine: np.ndarray,
                        calibration: Mapping[str, Any] | None = None) -> tuple[dict[str, Any], np.ndarray]:
    """The report for one translation: ``{"calibration", "regions"}`` and the regions' label image.

    Args:
        source: the translation's input, in [-1, 1] (the network's range).
        output: the translation, on the input's grid, in [-1, 1].
        mask: where to compare them (the input's brain or foreground).
        affine: the grid's ``(N+1) × (N+1)`` voxel-to-world affine.
        calibration: thresholds and scales (:func:`load_calibration`); the built-in one when ``None``.
    """
    calibration = check_calibration(FAITHFULNESS_CALIBRATION if calibration is None else calibration, "calibration")
    if source.ndim + 1 != np.asarray(affine).shape[0]:
        raise ValueError(f"a {source.ndim}D image needs a {source.ndim + 1}×{source.ndim + 1} affine")
    scores = residual_scores(source, output, mask > 0, voxel_spacing(affine), float(calibration["sigma_mm"]),
                             int(calibration["bins"]))
    structure = structure_maps(source, output, mask > 0, voxel_spacing(affine), float(calibration["sigma_mm"]))
    regions, labels = find_regions(scores, mask, affine, calibration, structure)
    return {"calibration": calibration, "regions": regions}, labels


def report_text(report: Mapping[str, Any], path: str | Path, extra: Mapping[str, Any] | None = None) -> str:
    """The report as the text of ``path``: JSON (``extra`` fields first) for ``.json``, one row a region for ``.csv``.

    Raises:
        InputError: for another suffix.
    """
    suffix = Path(path).suffix.lower()
    if suffix == ".json":
        return json.dumps({**(extra or {}), **report}, indent=1) + "\n"
    if suffix == ".csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=_FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: r[k] for k in _FIELDS} for r in report["regions"])
        return buffer.getvalue()
    raise InputError(path, f"faithfulness report must be a {' or '.join(REPORT_SUFFIXES)} file name")


def region_outlines(labels: np.ndarray) -> np.ndarray:
    """The one-voxel-thick rims of a label image's regions, per slice of the last axis for 3D (boolean)."""
    found = labels > 0
    if labels.ndim == 3:
        eroded = np.stack([ndimage.binary_erosion(found[..., k]) for k in range(labels.shape[-1])], axis=-1)
    else:
        eroded = ndimage.binary_erosion(found)
    return found & ~eroded


def report_montage(path: str | Path, source: np.ndarray, output: np.ndarray, labels: np.ndarray,
                   slices: int = 3) -> Path:
    """A PNG of input | translation with the regions outlined, one row per region (the largest peaks first, up to
    ``slices``; the middle slice when there is none), through each region's centre on the last axis (3D).

    Args:
        path: the PNG to write (atomically).
        source: the translation's input (any units; each image scaled by its own 1st–99.5th percentiles).
        output: the translation.
        labels: :func:`find_regions`' label image.
        slices: at most this many rows.
    """
    from medtrans.visualize import save_png

    def scaled(x: np.ndarray) -> np.ndarray:
        low, high = np.percentile(x, [1, 99.5])
        return np.clip((x - low) / max(high - low, 1e-12), 0, 1)

    rim = region_outlines(labels)
    s, o = scaled(source), scaled(output)
    count = int(labels.max())
    picks = [int(round(np.argwhere(labels == i)[:, -1].mean())) for i in range(1, min(count, slices) + 1)]
    rows = []
    for k in picks if (picks and source.ndim == 3) else [source.shape[-1] // 2 if source.ndim == 3 else None]:
        at = (..., k) if k is not None else (...,)
        tiles = [np.where(rim[at], 1.0, x[at]) for x in (s, o)]
        rows.append(np.concatenate([np.pad(t.T[::-1], ((0, 4), (0, 4))) for t in tiles], axis=1))
    picture = (np.concatenate(rows, axis=0) * 255).astype(np.uint8)
    width = rows[0].shape[1] // 2
    return save_png(path, picture, scale=2, labels=[(0, "input"), (width, f"translation: {count} region(s)")])


def report_paths(path: str | Path) -> dict[str, Path]:
    """``PATH`` (``.json`` or ``.csv``) holds the report; the montage ``<stem>.png`` sits beside it.

    Raises:
        InputError: for another suffix.
    """
    path = Path(path)
    if path.suffix.lower() not in REPORT_SUFFIXES:
        raise InputError(path, f"faithfulness report must be a {' or '.join(REPORT_SUFFIXES)} file name")
    return {"report": path, "montage": path.with_suffix(".png")}


def report_writes(path: str | Path, source: np.ndarray, output: np.ndarray, mask: np.ndarray, affine: np.ndarray,
                  calibration: Mapping[str, Any] | None = None, extra: Mapping[str, Any] | None = None
                  ) -> tuple[list[tuple[Path, Any]], dict[str, Any]]:
    """The report of one translation and the ``(path, write(tmp))`` pairs that write it and its montage (for
    :func:`medtrans.io.atomic_write_many`, beside the translation's own files)."""
    paths = report_paths(path)
    report, labels = faithfulness_report(source, output, mask, affine, calibration)
    text = report_text(report, paths["report"], extra)
    return [(paths["report"], lambda tmp: Path(tmp).write_text(text, encoding="utf-8")),
            (paths["montage"], lambda tmp: report_montage(tmp, source, output, labels))], report
