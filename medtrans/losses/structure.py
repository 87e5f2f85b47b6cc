"""Structure losses between a source and its translation, built from config entries, with their weight schedules."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from torch import nn

from medtrans.losses.lncc import LNCCLoss
from medtrans.losses.mutual_information import MutualInformationLoss
from medtrans.losses.ngf import NGFLoss
from medtrans.losses.polarity import PolarityLoss

__all__ = ["SCHEDULE_KEYS", "STRUCTURE_TYPES", "linear_decay", "schedule_factor", "structure_loss"]

SCHEDULE_KEYS = ("warmup", "cooldown")
STRUCTURE_TYPES = ("ngf", "lncc", "mi", "polarity")


def structure_loss(spec: Mapping[str, Any], spatial_dims: int) -> nn.Module:
    """A structure loss between source and translation from a config entry, e.g. ``{"type": "ngf", "eps": 0.15}``.

    Raises:
        ValueError: on an unknown type, or a ``warmup`` or ``cooldown`` that is not ``[start, end]`` with
            ``0 <= start < end``.
    """
    for key in SCHEDULE_KEYS:
        window = spec.get(key)
        if window is not None and not (isinstance(window, Sequence) and len(window) == 2
                                       and all(isinstance(i, int) for i in window) and 0 <= window[0] < window[1]):
            raise ValueError(f"structure loss {key} must be [start, end] iterations with 0 <= start < end, got {window!r}")
    weight = spec.get("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight < 0:
        raise ValueError(f"structure loss weight must be a finite number >= 0, got {weight!r}")
    kind = spec.get("type")
    args = {k: v for k, v in spec.items() if k not in ("type", "weight", *SCHEDULE_KEYS)}
    if kind == "ngf":
        return NGFLoss(spatial_dims, **args)
    if kind == "lncc":
        return LNCCLoss(spatial_dims, **args)
    if kind == "mi":
        return MutualInformationLoss(**args)
    if kind == "polarity":
        return PolarityLoss(**args)
    raise ValueError(f"unknown structure loss type {kind!r}; available: {', '.join(map(repr, STRUCTURE_TYPES))}")


def schedule_factor(spec: Mapping[str, Any], iteration: int) -> float:
    """A structure loss's weight factor at ``iteration``: ``warmup`` ramps it from 0 up to 1, ``cooldown`` from 1 down
    to 0, linearly between their ``[start, end]``; an absent window leaves it at 1."""
    factor = 1.0
    for key in SCHEDULE_KEYS:
        if spec.get(key) is not None:
            start, end = spec[key]
            down = linear_decay(start, end - start)(iteration)
            factor *= 1.0 - down if key == "warmup" else down
    return factor


def linear_decay(constant: int, decay: int) -> Callable[[int], float]:
    """A factor of the iteration: 1 until ``constant``, then linearly down to 0 over ``decay`` iterations (0 = stays 1)."""

    def factor(iteration: int) -> float:
        if decay <= 0 or iteration < constant:
            return 1.0
        return max(0.0, 1.0 - (iteration - constant) / decay)

    return factor
