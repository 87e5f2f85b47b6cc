"""Where a translator starts: the best global intensity mapping from domain A to domain B that needs no training,
chosen from the (unpaired) training volumes alone.

Two candidates, each a monotone map of A's foreground intensities onto B's foreground distribution (so both give B's
histogram exactly): ``"same"`` keeps the order of the tissues' intensities (histogram matching; T1c → FLAIR), and
``"inverted"`` reverses it (T1 → T2, T2 → FLAIR). Histograms cannot tell them apart, so the choice looks at where the
intensities lie: for each candidate, the joint histogram of three voxel features is compared with domain B's,

- the voxel's rank in B's intensity distribution,
- the mean rank of its neighbourhood (a Gaussian of 1 voxel, at the estimate's stride), and
- its distance to the background, in voxels of the original grid (up to :data:`DISTANCE_VOXELS`),

and the candidate with the smaller Jensen–Shannon divergence wins. In T2, bright CSF lines the brain's surface and its
sulci and dark white matter fills its centre; a T1 inverted onto T2's histogram has the same layout, a T1 matched
without inversion has its mirror image. On the shared data this picks the candidate that correlates better with the
real co-registered target for T1↔T2, T1→FLAIR, T1c↔FLAIR and T2↔FLAIR in every dataset (docs/methods.md).

The mapping is piecewise linear through quantiles of each domain's foreground (and the background, which maps to the
background), applied in the network's normalised range; :class:`~medtrans.networks.start.
StartedGenerator` applies it and learns the residual on top.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from medtrans.defaults import START_KNOTS

__all__ = ["START_TYPES", "StartMapping", "estimate_start", "input_knots"]

START_TYPES = ("auto", "same", "inverted", "none")
"""``auto``: chosen from the data; ``same`` / ``inverted``: forced; ``none``: the generator starts from nothing."""
DISTANCE_VOXELS = 20.0
"""Distances to the background beyond this many voxels fall in the last distance bin."""
_BINS = (8, 8, 4)  # rank, neighbourhood rank, distance
_MAX_VOLUMES = 8  # per domain: the estimate's cost stays a few seconds whatever the training set
_TARGET_VOXELS = 100**3  # volumes are strided down to about this many voxels
_FOREGROUND_THRESHOLD = -0.9  # the patch sampler's default (TrainStream's foreground_threshold)
logger = logging.getLogger("medtrans.start")


@dataclass
class StartMapping:
    """A piecewise-linear intensity map from domain A to domain B in normalised units, and why it was chosen.

    Attributes:
        type: ``"same"``, ``"inverted"`` or ``"none"``.
        knots: increasing A intensities (the background first).
        values: the B intensities they map to.
        evidence: the divergence of each candidate from domain B (smaller is closer), when chosen from data.
    """

    type: str
    knots: list[float] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    evidence: dict[str, float] = field(default_factory=dict)

    def inverse(self) -> StartMapping:
        """The B → A map (for a two-sided method's second generator)."""
        if self.type == "none":
            return self
        pairs = sorted(zip(self.values, self.knots))
        knots = _increasing(np.array([k for k, _ in pairs]))
        return StartMapping(self.type, knots.tolist(), [v for _, v in pairs], dict(self.evidence))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return np.interp(x, self.knots, self.values) if self.type != "none" else x

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "evidence": dict(self.evidence)}


def _increasing(knots: np.ndarray) -> np.ndarray:
    """``knots`` made strictly increasing (ties, e.g. at a clipped 1.0, are spread by 1e-6)."""
    out = knots.astype(np.float64).copy()
    for i in range(1, out.size):
        out[i] = max(out[i], out[i - 1] + 1e-6)
    return out


def _strided(image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """``image`` and its filled ``mask`` strided down to about :data:`_TARGET_VOXELS` voxels, and the stride."""
    stride = max(1, int(round((image.size / _TARGET_VOXELS) ** (1 / 3))))
    view = (slice(None, None, stride),) * image.ndim
    return np.ascontiguousarray(image[view]), _filled(np.ascontiguousarray(mask[view])), stride


def _filled(mask: np.ndarray) -> np.ndarray:
    """``mask`` with its holes filled, in 3D and in every slice along the last axis (a volume of one slice has no 3D
    holes). The darkest tissue, CSF in T1, lies near the background value after a percentile mapping, so a sampler's
    foreground drops it; filled, the ventricles and the enclosed sulci count as the head's inside again."""
    out = ndimage.binary_fill_holes(mask)
    for k in range(mask.shape[-1]):
        out[..., k] |= ndimage.binary_fill_holes(mask[..., k])
    return out


def _quantiles(foreground: np.ndarray, num_knots: int) -> np.ndarray:
    """The ``num_knots - 1`` foreground quantiles a start mapping runs through (0.5 % to 99.5 %)."""
    return np.quantile(foreground, np.linspace(0.005, 0.995, num_knots - 1))


def input_knots(image: np.ndarray, num_knots: int, background: float = -1.0) -> np.ndarray:
    """The start mapping's A knots for one input volume (normalised units): the background, then the quantiles of the
    input's own foreground, taken as :func:`estimate_start` takes them from the training volumes.

    A translator maps each input through these knots onto domain B's values, so a subject whose histogram differs
    from the training volumes' (another scanner or protocol) starts from its own histogram matched onto B's, as the
    training-free baselines do, not from the pooled training histogram.

    Raises:
        ValueError: when the volume has no foreground voxels.
    """
    strided, mask, _ = _strided(image, (np.abs(image - background) > 1e-6) & (image > _FOREGROUND_THRESHOLD))
    foreground = strided[mask & (strided > background + 1e-3)]
    if foreground.size == 0:
        raise ValueError("the volume has no foreground voxels to fit the start mapping to")
    return _increasing(np.array([background, *_quantiles(foreground, num_knots)]))


def _features(rank: np.ndarray, mask: np.ndarray, distance: np.ndarray) -> np.ndarray:
    """The normalised joint histogram of (rank, neighbourhood rank, distance) over the foreground."""
    weight = ndimage.gaussian_filter(mask.astype(np.float32), 1.0)
    around = ndimage.gaussian_filter(np.where(mask, rank, 0).astype(np.float32), 1.0) / np.maximum(weight, 1e-6)
    columns = np.stack([rank[mask], np.clip(around[mask], 0, 1), np.minimum(distance[mask] / DISTANCE_VOXELS, 0.999)], 1)
    hist, _ = np.histogramdd(columns, bins=_BINS, range=[(0, 1)] * 3)
    return hist.ravel() / hist.sum()


def _js(p: np.ndarray, q: np.ndarray) -> float:
    mid = (p + q) / 2

    def kl(a: np.ndarray) -> float:
        keep = a > 0
        return float(np.sum(a[keep] * np.log(a[keep] / mid[keep])))

    return 0.5 * kl(p) + 0.5 * kl(q)


def estimate_start(volumes_a: Sequence[tuple[np.ndarray, np.ndarray]], volumes_b: Sequence[tuple[np.ndarray, np.ndarray]],
                   start_type: str = "auto", num_knots: int = START_KNOTS, background: float = -1.0) -> StartMapping:
    """Choose (or build the forced) start mapping from unpaired volumes of both domains.

    Args:
        volumes_a: ``(image, foreground mask)`` pairs of domain A, images in normalised units.
        volumes_b: the same for domain B.
        start_type: one of :data:`START_TYPES`.
        num_knots: knots of the piecewise-linear map: the background and ``num_knots - 1`` foreground quantiles
            (:data:`medtrans.defaults.START_KNOTS`, what a :class:`~medtrans.networks.start.StartedGenerator` holds).
        background: the normalised background value, mapped to itself.

    Raises:
        ValueError: on an unknown ``start_type``, or a domain without foreground voxels.
    """
    if start_type not in START_TYPES:
        raise ValueError(f"start must be one of {START_TYPES}, got {start_type!r}")
    if start_type == "none":
        return StartMapping("none")
    pick = [np.linspace(0, len(v) - 1, min(len(v), _MAX_VOLUMES)).round().astype(int) for v in (volumes_a, volumes_b)]
    a = [_strided(*volumes_a[i]) for i in pick[0]]
    b = [_strided(*volumes_b[i]) for i in pick[1]]
    # foreground voxels clipped onto the background value (the darkest percent of a percentile mapping) cannot be told
    # from the background: the quantiles come from the rest, so the background keeps its own knot
    fg_a = np.concatenate([img[m & (img > background + 1e-3)] for img, m, _ in a])
    fg_b = np.concatenate([img[m & (img > background + 1e-3)] for img, m, _ in b])
    if fg_a.size == 0 or fg_b.size == 0:
        raise ValueError("a domain has no foreground voxels to estimate the start mapping from")
    q_a, q_b = _quantiles(fg_a, num_knots), _quantiles(fg_b, num_knots)
    q_a = _increasing(q_a)
    candidates = {"same": q_b, "inverted": q_b[::-1]}
    evidence: dict[str, float] = {}
    if start_type == "auto":
        sorted_b = np.sort(fg_b)

        def rank(x: np.ndarray) -> np.ndarray:
            return (np.searchsorted(sorted_b, x) / sorted_b.size).astype(np.float32)

        def distance(mask: np.ndarray, stride: int) -> np.ndarray:
            return ndimage.distance_transform_edt(mask) * stride

        target = np.mean([_features(rank(img), m, distance(m, s)) for img, m, s in b], axis=0)
        for name, values in candidates.items():
            mapped = [(rank(np.interp(img, q_a, values)), m, distance(m, s)) for img, m, s in a]
            evidence[name] = _js(np.mean([_features(*f) for f in mapped], axis=0), target)
        start_type = min(evidence, key=evidence.get)
        logger.info("start mapping: %s (divergence from domain B: same %.3f, inverted %.3f)", start_type,
                    evidence["same"], evidence["inverted"])
    knots = [background, *q_a.tolist()]  # every quantile lies above the background (see above)
    values = [background, *candidates[start_type].tolist()]
    return StartMapping(start_type, [float(k) for k in knots], [float(v) for v in values], evidence)
