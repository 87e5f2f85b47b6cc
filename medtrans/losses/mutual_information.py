"""Normalised global mutual information as a structure loss that allows any intensity mapping, N-D."""

from __future__ import annotations

import torch
from monai.losses import GlobalMutualInformationLoss
from torch import nn

__all__ = ["MutualInformationLoss"]


class MutualInformationLoss(nn.Module):
    """``1 − MI(s, o) / MI(s, s)``: MONAI's Parzen-window :class:`~monai.losses.GlobalMutualInformationLoss` between a
    source and its translation, over the whole image, normalised by the source's own entropy.

    0 when the translation is any one-to-one function of the source's intensities (inverted, or non-monotone), 1 when
    it is unrelated to them. Unlike the local terms (NGF, :class:`~medtrans.losses.LNCCLoss`), it does not care
    which intensity goes where, only that one mapping holds across the image: a translation whose contrast is
    inverted in one region and not in the next scores worse (lesjak patient26, central 48³: 0.23 for the T1 with
    its halves of opposite polarity, 0.69 for the real T2, 0.82 for the T2 with noise of σ 0.3, 1.0 for noise).

    Args:
        value_range: the images' intensity range, mapped to MONAI's [0, 1] (values outside are clamped).
        num_bins: Parzen histogram bins.
        sigma_ratio: Gaussian Parzen width in bins.
    """

    def __init__(self, value_range: tuple[float, float] = (-1.0, 1.0), num_bins: int = 23, sigma_ratio: float = 0.5) -> None:
        super().__init__()
        low, high = value_range
        if not high > low:
            raise ValueError(f"value_range must be (low, high) with high > low, got {value_range!r}")
        self.low, self.width = float(low), float(high - low)
        self.mi = GlobalMutualInformationLoss(kernel_type="gaussian", num_bins=num_bins, sigma_ratio=sigma_ratio)

    def forward(self, source: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        """Loss between ``source`` and ``output``, both ``(B, 1, *spatial)``; averaged over the batch."""
        s, o = (source - self.low) / self.width, (output - self.low) / self.width
        with torch.no_grad():
            entropy = -self.mi(s, s)
        return 1.0 + self.mi(s, o) / entropy.clamp_min(1e-6)
