"""What domain A looked like at training, and how far an input is from it (the out-of-distribution check).

Every volume is summarised by :func:`volume_stats` right after :func:`~medtrans.data.preprocessing.prepare`, at
training (from the volume being loaded into memory, so no file is read again) and at inference, so both sides are
measured the same way:

- ``quantiles``: 21 foreground quantiles of the normalised input (the source intensity mapping applied), which
  differ between contrasts (a T2 or a FLAIR normalised like a T1 has another histogram shape) and between MR and CT;
- ``spacing``: the voxel size in mm, RAS+ axes, before any resampling;
- ``fov``: the field of view in mm (voxels × spacing) along each RAS+ axis;
- ``shape``: an orientation cue: the foreground's spread along each RAS+ axis (log of its standard deviation over
  their mean) and its skewness, which a header that swaps or flips axes changes;
- ``depth``: the mean normalised intensity of the foreground by distance from its boundary (0–3, 3–6, 6–10, 10–15,
  15–25, over 25 mm): the layout of bright and dark tissue from the surface inwards, which a histogram cannot see;
- ``axial``: the share of the foreground in 8 slabs of its extent along each RAS+ axis, whose asymmetry a header
  that flips an axis reverses (not left–right: a brain is too symmetric for it);
- ``edges``: a small weights-free feature: the mean gradient magnitude (central differences over ±2 mm) of the
  foreground at least 3 mm deep, in 5 bands of its intensity (fifths), as log ratios to their mean. Which intensities
  sit on edges tells the contrast's polarity: in a T1 the brightest fifth is white matter (smooth) and the second
  fifth grey matter and CSF boundaries (edges); in a FLAIR the brightest fifth is the cortical ribbon and lesions
  (edges) and the second fifth white matter (smooth);
- ``orientation``: the file's own axes before reorientation (per voxel axis, ± the world axis 1–3: ``L A S`` is
  ``-1 2 3``), which no content statistic sees for a left–right flip.

:func:`build_fingerprint` keeps every training volume's statistics and calibrates a threshold per component from
their spread (leave-one-out, times :data:`~medtrans.defaults.OOD_MARGIN`, at least the component's floor in
:data:`~medtrans.defaults.OOD_FLOORS`); :func:`ood_report` measures an input against it. The fingerprint is plain
data (saved in the model file, checked on load by :func:`check_fingerprint`). docs/inference.md tabulates what it
detects and what it cannot.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import ndimage

from medtrans.data.intensity import foreground_mask
from medtrans.defaults import OOD_FLOORS, OOD_MARGIN

if TYPE_CHECKING:
    from medtrans.data.preprocessing import Prepared

__all__ = ["COMPONENTS", "LEVELS", "axcodes", "build_fingerprint", "check_fingerprint", "ood_message", "ood_path",
           "ood_report", "volume_stats"]

LEVELS = tuple(round(float(q), 4) for q in np.linspace(0.025, 0.975, 21))
"""The foreground quantile levels of the intensity statistic."""
COMPONENTS = ("intensity", "spacing", "fov", "shape", "depth", "axial", "edges", "orientation")
"""The distances measured, each against its own threshold."""
DEPTHS = (0.0, 3.0, 6.0, 10.0, 15.0, 25.0, math.inf)
"""The depth profile's bins: distance in mm from the foreground's boundary."""
AXIAL_BINS = 8
"""The axial profile's slabs along each axis of the foreground's extent."""
EDGE_BANDS = 5
"""The edge profile's intensity bands (quantiles of the deep foreground)."""
EDGE_STEP_MM, EDGE_DEPTH_MM = 2.0, 3.0  # central differences over ±2 mm, at voxels at least 3 mm inside the foreground
_LAYOUT_VOXELS = 1_000_000  # bounding-box voxels the layout profiles use at most (a fixed stride: deterministic)
_SAMPLE = 500_000  # foreground voxels the shape statistic uses at most (a fixed stride: deterministic)


def volume_stats(prepared: Prepared) -> dict[str, list[float]]:
    """The statistics of one prepared volume (plain lists of floats, RAS+ axes when the preprocessing reorients).

    Raises:
        ValueError: if the volume has no foreground.
    """
    source = prepared.source
    foreground = foreground_mask(source, prepared.source_mask)
    normalised = prepared.intensity.forward(source[foreground].astype(np.float32))
    spacing = np.sqrt((np.asarray(prepared.canonical.affine, dtype=float)[:3, :3] ** 2).sum(axis=0))
    return {
        "quantiles": [float(q) for q in np.quantile(normalised, LEVELS)],
        "spacing": [float(s) for s in spacing],
        "fov": [float(n * s) for n, s in zip(source.shape, spacing)],
        "shape": _shape(foreground, spacing),
        **_layout(prepared, foreground, spacing),
        "orientation": [float((axis + 1) * sign) if np.isfinite(axis) else 0.0
                        for axis, sign in prepared.canonical.orientation],
    }


def _layout(prepared: Prepared, foreground: np.ndarray, spacing: np.ndarray) -> dict[str, list[float]]:
    """The depth, axial and edge profiles on the foreground's bounding box, taken every ``stride`` voxels (a fixed
    stride: deterministic, at most :data:`_LAYOUT_VOXELS` voxels: about 0.15 s for a 1 mm brain).

    depth: the mean normalised intensity of the foreground by distance in mm from its boundary (:data:`DEPTHS`);
    axial: the share of the foreground in each of :data:`AXIAL_BINS` slabs of its extent along each axis (R, A, S);
    edges: :func:`_edges`.
    """
    full = tuple(slice(int(i.min()), int(i.max()) + 1) for i in np.nonzero(foreground))
    stride = max(1, math.ceil((math.prod(b.stop - b.start for b in full) / _LAYOUT_VOXELS) ** (1 / 3)))
    box = tuple(slice(b.start, b.stop, stride) for b in full)
    fg = foreground[box]
    depth = ndimage.distance_transform_edt(np.pad(fg, 1), sampling=spacing * stride)[1:-1, 1:-1, 1:-1][fg]
    values = prepared.intensity.forward(prepared.source[box][fg].astype(np.float32)).astype(float)
    bins = np.digitize(depth, np.array(DEPTHS[1:-1], dtype=float))
    counts = np.bincount(bins, minlength=len(DEPTHS) - 1)
    sums = np.bincount(bins, weights=values, minlength=len(DEPTHS) - 1)
    profile, last = [], float(values.mean())
    for count, total in zip(counts, sums):  # an empty bin (a thin foreground) takes the previous bin's mean
        last = float(total / count) if count else last
        profile.append(last)
    axial = []
    for n, position in zip(fg.shape, np.nonzero(fg)):
        share = np.bincount(np.minimum(position * AXIAL_BINS // n, AXIAL_BINS - 1), minlength=AXIAL_BINS)
        axial += [float(v) for v in share / share.sum()]
    points = np.stack(np.nonzero(fg), axis=1)[depth >= EDGE_DEPTH_MM] * stride
    return {"depth": profile, "axial": axial, "edges": _edges(prepared.source[full], points, spacing,
                                                              prepared.intensity.forward)}


def _edges(source: np.ndarray, points: np.ndarray, spacing: np.ndarray, forward: Any) -> list[float]:
    """The mean gradient magnitude at ``points`` (``(N, 3)`` voxel indices of ``source``, intensities normalised by
    ``forward``) in each of :data:`EDGE_BANDS` bands of their intensity (equal counts, by rank), as the log of its
    ratio to the mean over the bands (central differences over ±:data:`EDGE_STEP_MM`; all zeros when too few points).
    Only the voxels it reads are normalised."""
    def image(at: np.ndarray) -> np.ndarray:
        return forward(source[tuple(at.T)]).astype(float)

    steps = np.maximum(1, np.round(EDGE_STEP_MM / spacing)).astype(int)
    points = points[np.all((points >= steps) & (points < np.array(source.shape) - steps), axis=1)]
    if len(points) < 10 * EDGE_BANDS:
        return [0.0] * EDGE_BANDS
    squared = np.zeros(len(points))
    for axis, (step, size) in enumerate(zip(steps, spacing)):
        ahead, behind = points.copy(), points.copy()
        ahead[:, axis] += step
        behind[:, axis] -= step
        squared += ((image(ahead) - image(behind)) / (2 * step * size)) ** 2
    values = image(points)
    bands = np.empty(len(points), dtype=int)
    bands[np.argsort(values, kind="stable")] = np.arange(len(points)) * EDGE_BANDS // len(points)
    means = np.maximum(np.bincount(bands, np.sqrt(squared), EDGE_BANDS) / np.bincount(bands, minlength=EDGE_BANDS),
                       1e-12)
    return [float(v) for v in np.log(means / means.mean())]


def _shape(foreground: np.ndarray, spacing: np.ndarray) -> list[float]:
    """Log relative spread (3) and skewness (3) of the foreground voxels' positions in mm along each axis."""
    coords = np.stack(np.nonzero(foreground), axis=1)
    coords = coords[:: max(1, len(coords) // _SAMPLE)].astype(float) * spacing
    centred = coords - coords.mean(axis=0)
    std = np.maximum(centred.std(axis=0), 1e-6)
    skew = (centred**3).mean(axis=0) / std**3
    log_std = np.log(std)
    return [float(v) for v in (*(log_std - log_std.mean()), *skew)]


_KEYS = {"intensity": "quantiles", "spacing": "spacing", "fov": "fov", "shape": "shape", "depth": "depth",
         "axial": "axial", "edges": "edges", "orientation": "orientation"}  # the statistic each component measures
_SIZES = {"quantiles": len(LEVELS), "spacing": 3, "fov": 3, "shape": 6, "depth": len(DEPTHS) - 1,
          "axial": 3 * AXIAL_BINS, "edges": EDGE_BANDS, "orientation": 3}
_LAYERS = (COMPONENTS[:4], COMPONENTS[4:6], COMPONENTS[6:])  # the components in the order versions added them
_FIXED = ("orientation",)  # not calibrated on the training volumes: its threshold is its floor


def _polarity(edges: np.ndarray) -> float:
    """The edge profile's contrast polarity: log ratio of the brightest band's mean gradient to the second band's
    (negative for a T1, whose brightest tissue is smooth white matter; positive for a FLAIR or a T2)."""
    return float(edges[-1] - edges[1])


def axcodes(orientation: list[float]) -> str:
    """The letters of an ``orientation`` statistic (``[-1, 2, 3]`` → ``"LAS"``; ``?`` for an axis without one)."""
    return "".join("?" if not v else ("RAS" if v > 0 else "LPI")[int(abs(v)) - 1] for v in orientation)


def _antisymmetric(profile: np.ndarray) -> np.ndarray:
    """Per axis, the first half of (share − share reversed): what a flip of that axis negates."""
    per_axis = profile.reshape(3, AXIAL_BINS)
    return (per_axis - per_axis[:, ::-1])[:, : AXIAL_BINS // 2].ravel()


def _distances(stats: dict[str, list[float]], volumes: list[dict[str, list[float]]],
               components: tuple[str, ...] = COMPONENTS) -> dict[str, float]:
    """One number per component: how far ``stats`` lies from the training ``volumes``.

    intensity: mean absolute difference of the quantiles from those of the closest training volume (normalised units;
    the closest, not the mean, so a training set of several protocols is not blurred into one); spacing and fov: the
    largest log ratio by which an axis lies outside the training range (0 inside it); shape: the largest absolute
    difference of a shape value from the closest training volume's; depth: the same for the depth profile, each
    profile taken relative to its own mean (the level is the intensity component's); axial: the same for the
    antisymmetric part of the axial profile (what a flipped axis reverses), in shares of the foreground; edges: how
    far the edge profile's polarity (:func:`_polarity`) lies outside the training range (0 inside it); orientation:
    the number of axes on which the file's orientation differs from the closest training volume's (0: one training
    volume had the same).
    """
    def closest(key: str, reduce: Any, view: Any = lambda a: a) -> float:
        own = view(np.array(stats[key], dtype=float))
        return float(min(reduce(np.abs(own - view(np.array(v[key], dtype=float)))) for v in volumes))

    def outside_range(values: Any, own: Any) -> float:
        values, own = np.array(values, dtype=float), np.array(own, dtype=float)
        return float(np.max(np.maximum(0.0, np.maximum(values.min(axis=0) - own, own - values.max(axis=0)))))

    def outside(key: str) -> float:
        return outside_range(np.log([v[key] for v in volumes]), np.log(stats[key]))

    measures = {
        "intensity": lambda: closest("quantiles", np.mean),
        "spacing": lambda: outside("spacing"),
        "fov": lambda: outside("fov"),
        "shape": lambda: closest("shape", np.max),
        "depth": lambda: closest("depth", np.max, lambda a: a - a.mean()),
        "axial": lambda: closest("axial", np.max, _antisymmetric),
        "edges": lambda: outside_range([_polarity(np.array(v["edges"])) for v in volumes],
                                       _polarity(np.array(stats["edges"]))),
        "orientation": lambda: closest("orientation", lambda d: np.count_nonzero(d > 0.5)),
    }
    return {name: measures[name]() for name in components}


def _components(volumes: list[dict[str, list[float]]]) -> tuple[str, ...]:
    """The components every volume has the statistics of, layer by layer (:data:`_LAYERS`: statistics cached by an
    older version lack the later ones), so the fingerprint is one an older version could have saved."""
    kept: tuple[str, ...] = ()
    for layer in _LAYERS:
        if not all(_KEYS[name] in v for name in layer for v in volumes):
            break
        kept += layer
    return kept


def build_fingerprint(volumes: list[dict[str, list[float]]]) -> dict[str, Any]:
    """The fingerprint of a training domain from its volumes' :func:`volume_stats` (plain data for the model file).

    Each threshold is the largest leave-one-out distance among the training volumes (each one measured against the
    others) times :data:`~medtrans.defaults.OOD_MARGIN`, and at least the component's floor; with one volume, the
    floor. The orientation's threshold is its floor (an orientation no training volume had is far, however many
    orientations they had). A component some volume has no statistic for is left out.
    """
    if not volumes:
        return {}
    components = _components(volumes)
    keep = [_KEYS[name] for name in components]
    volumes = [{k: list(v[k]) for k in keep} for v in volumes]
    loo = {name: 0.0 for name in components}
    for i, own in enumerate(volumes):
        others = volumes[:i] + volumes[i + 1 :]
        if others:
            for name, value in _distances(own, others, components).items():
                loo[name] = max(loo[name], value)
    thresholds = {name: round(OOD_FLOORS[name] if name in _FIXED else max(OOD_FLOORS[name], OOD_MARGIN * loo[name]),
                              4) for name in components}
    return {"levels": list(LEVELS), "volumes": volumes, "thresholds": thresholds}


def check_fingerprint(fingerprint: Any) -> dict[str, Any]:
    """``fingerprint`` checked as a model record field (``{}``: none recorded). One saved by an older version,
    before the depth and axial profiles or the edge profile and orientation existed (no such statistics nor
    thresholds), is valid, and checked on the components it has.

    Raises:
        ValueError: naming what is malformed.
    """
    if not isinstance(fingerprint, dict):
        raise ValueError(f"fingerprint must be a dict, got {type(fingerprint).__name__}")
    if not fingerprint:
        return {}
    if set(fingerprint) != {"levels", "volumes", "thresholds"}:
        raise ValueError(f"fingerprint has fields {sorted(map(str, fingerprint))}, expected levels, thresholds and "
                         "volumes")
    if list(fingerprint["levels"]) != list(LEVELS):
        raise ValueError("fingerprint.levels differ from this version's quantile levels")
    thresholds = fingerprint["thresholds"]
    allowed = [set(sum(_LAYERS[: i + 1], ())) for i in range(len(_LAYERS))]
    if not isinstance(thresholds, dict) or set(thresholds) not in allowed or not all(
            _number(v) and v >= 0 for v in thresholds.values()):
        raise ValueError(f"fingerprint.thresholds must give a number >= 0 for each of {', '.join(COMPONENTS)} (or "
                         f"of the first {' or '.join(str(len(a)) for a in allowed[:-1])}, saved before the others "
                         "existed)")
    volumes = fingerprint["volumes"]
    sizes = {_KEYS[name]: _SIZES[_KEYS[name]] for name in COMPONENTS if name in thresholds}
    if not isinstance(volumes, list) or not volumes:
        raise ValueError("fingerprint.volumes must be a non-empty list")
    for i, volume in enumerate(volumes):
        if not isinstance(volume, dict) or set(volume) != set(sizes) or not all(
                isinstance(volume[k], list) and len(volume[k]) == n and all(map(_number, volume[k]))
                for k, n in sizes.items()):
            raise ValueError(f"fingerprint.volumes[{i}] must hold {sizes} lists of numbers")
        if min(volume["spacing"] + volume["fov"]) <= 0:
            raise ValueError(f"fingerprint.volumes[{i}] has a spacing or field of view <= 0")
    return fingerprint


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def ood_report(fingerprint: dict[str, Any], stats: dict[str, list[float]]) -> dict[str, Any]:
    """How far an input (its :func:`volume_stats`) lies from the training domain: the distances, thresholds and
    verdict, as written to the ``.ood.json`` sidecar (``{"checked": False}`` for a model without a fingerprint)."""
    if not fingerprint:
        return {"checked": False, "reason": "the model records no training fingerprint (trained before it existed)"}
    volumes = fingerprint["volumes"]
    thresholds = fingerprint["thresholds"]
    distances = _distances(stats, volumes, tuple(name for name in COMPONENTS if name in thresholds))
    far = [name for name in distances if distances[name] > thresholds[name]]
    spacings = np.array([v["spacing"] for v in volumes])
    return {
        "checked": True,
        "out_of_distribution": bool(far),
        "far": far,
        "distances": {k: round(v, 4) for k, v in distances.items()},
        "thresholds": dict(thresholds),
        "input": {"spacing_mm": [round(s, 3) for s in stats["spacing"]], "fov_mm": [round(f, 1) for f in stats["fov"]],
                  "orientation": axcodes(stats["orientation"])},
        "training": {"volumes": len(volumes), "spacing_mm": [[round(float(s), 3) for s in spacings.min(axis=0)],
                                                             [round(float(s), 3) for s in spacings.max(axis=0)]],
                     "orientations": sorted({axcodes(v["orientation"]) for v in volumes if "orientation" in v})},
    }


def ood_message(report: dict[str, Any]) -> str:
    """The one-line reason of a far input (``""`` when it is not far)."""
    if not report.get("out_of_distribution"):
        return ""
    distances, thresholds = report["distances"], report["thresholds"]
    parts = [f"{name} distance {distances[name]:.3g} > {thresholds[name]:.3g}" for name in report["far"]]
    if "spacing" in report["far"]:
        low, high = report["training"]["spacing_mm"]
        parts.append(f"spacing {'x'.join(f'{s:.3g}' for s in report['input']['spacing_mm'])} mm vs "
                     f"{'x'.join(f'{s:.3g}' for s in low)}…{'x'.join(f'{s:.3g}' for s in high)} mm at training")
    if "orientation" in report["far"]:
        parts.append(f"orientation {report['input']['orientation']} vs "
                     f"{', '.join(report['training']['orientations'])} at training")
    hints = {"intensity": "the contrast", "spacing": "the grid", "fov": "the field of view",
             "shape": "the orientation header", "depth": "the contrast", "axial": "the orientation header",
             "edges": "the contrast", "orientation": "the orientation header"}
    checks = list(dict.fromkeys(hints[n] for n in report["far"]))
    return f"{'; '.join(parts)}: check {', '.join(checks)}"


def ood_path(output: str | Path) -> Path:
    """Where the out-of-distribution report of ``output`` goes: ``<output file name>.ood.json`` beside it
    (``t2.nii.gz`` → ``t2.nii.gz.ood.json``: one per output, whatever its suffix)."""
    output = Path(output)
    return output.with_name(f"{output.name}.ood.json")
