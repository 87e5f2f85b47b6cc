"""Patch adversarial loss computed from logits, safe under CUDA autocast."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from medtrans.defaults import ADVERSARIAL_CRITERIA

__all__ = ["ADVERSARIAL_CRITERIA", "AdversarialLoss"]


class AdversarialLoss(nn.Module):
    """The adversarial loss of one or several patch logit maps, averaged over the maps (e.g. the scales of a
    multi-resolution discriminator), in fp32.

    The values equal MONAI's :class:`~monai.losses.PatchAdversarialLoss` (``no_activation_leastsq=True``): ``bce`` is
    the binary cross-entropy of ``sigmoid(x)`` against 1 (real) or 0 (fake), ``least_squares`` the mean squared
    distance of ``x`` to 1 or 0 (LSGAN), ``hinge`` the hinge loss of ``tanh(x)``. Unlike MONAI's, ``bce`` is computed
    from the logits (``binary_cross_entropy_with_logits``): CUDA autocast refuses ``binary_cross_entropy`` on
    probabilities, and the logit form is also the numerically stable one.

    Args:
        criterion: ``"least_squares"``, ``"bce"`` or ``"hinge"``.

    Raises:
        ValueError: on an unknown criterion.
    """

    def __init__(self, criterion: str = "least_squares") -> None:
        super().__init__()
        if criterion not in ADVERSARIAL_CRITERIA:
            raise ValueError(f"adversarial criterion must be one of {ADVERSARIAL_CRITERIA}, got {criterion!r}")
        self.criterion = criterion

    def _single(self, logits: torch.Tensor, real: bool) -> torch.Tensor:
        x = logits.float()
        if self.criterion == "bce":
            return F.binary_cross_entropy_with_logits(x, torch.full_like(x, float(real)))
        if self.criterion == "least_squares":
            return F.mse_loss(x, torch.full_like(x, float(real)))
        x = torch.tanh(x)
        return F.relu(1 - x).mean() if real else F.relu(1 + x).mean()

    def forward(self, logits: torch.Tensor | Sequence[torch.Tensor], target_is_real: bool,
                for_discriminator: bool = True) -> torch.Tensor:
        """Mean loss over the logit maps.

        Args:
            logits: a logit map or a list of them.
            target_is_real: whether the maps should say "real" (always true for the generator's loss).
            for_discriminator: ``False`` for the generator's loss, which always targets "real".
        """
        maps = [logits] if isinstance(logits, torch.Tensor) else list(logits)
        real = target_is_real or not for_discriminator
        return torch.stack([self._single(m, real) for m in maps]).mean()
