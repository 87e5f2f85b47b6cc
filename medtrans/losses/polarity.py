"""A prior on the translation's contrast polarity: L1 to the source, or to its inverse, N-D."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["POLARITY_TYPES", "PolarityLoss", "invert_foreground"]

POLARITY_TYPES = ("same", "inverted")


def invert_foreground(image: torch.Tensor, tolerance: float = 1e-3) -> torch.Tensor:
    """``−x`` wherever ``x`` lies above its image's minimum (the foreground), the minimum (background) left as it is.

    Per image and channel of a ``(B, C, *spatial)`` batch: a skull-stripped brain normalised to [-1, 1] keeps its
    background at -1 while CSF, dark in a T1, becomes bright as in a T2.
    """
    low = image.flatten(2).amin(-1).view(*image.shape[:2], *[1] * (image.dim() - 2))
    return torch.where(image > low + tolerance, -image, image)


class PolarityLoss(nn.Module):
    """``mean |G(a) − p(a)|``, ``p(a)`` the source ``a`` itself (``"same"``) or its foreground inverted
    (``"inverted"``, :func:`invert_foreground`).

    The structure losses (NGF, LNCC, MI) score a translation and its inverse alike, but not the outputs between them,
    whose edges have faded: a generator that has to turn T1 contrast into T2 contrast must cross that ridge, and
    when it does is up to chance (docs/notes.md, "What did not help"). Stated for the first iterations only (a
    structure loss with ``"cooldown": [start, end]``), this term starts the generator at the contrast the user knows the target has, and
    leaves the rest to the other losses. It is a prior, not a translation: its weight must fall to 0.

    Args:
        polarity_type: ``"same"`` or ``"inverted"``.
    """

    def __init__(self, polarity_type: str = "inverted") -> None:
        super().__init__()
        if polarity_type not in POLARITY_TYPES:
            raise ValueError(f"polarity_type must be one of {POLARITY_TYPES}, got {polarity_type!r}")
        self.polarity_type = polarity_type

    def forward(self, source: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        """Mean absolute difference between ``output`` and the prior of ``source``, both ``(B, C, *spatial)``."""
        prior = source if self.polarity_type == "same" else invert_foreground(source)
        return (output - prior).abs().mean()
