"""Squared local normalised cross-correlation as a polarity-free structure loss, N-D."""

from __future__ import annotations

import torch
from monai.losses import LocalNormalizedCrossCorrelationLoss

__all__ = ["LNCCLoss"]


class LNCCLoss(LocalNormalizedCrossCorrelationLoss):
    """``1 − mean_x ρ²_x(a, b)``, ``ρ_x`` the correlation of ``a`` and ``b`` in the window around ``x``.

    MONAI's :class:`~monai.losses.LocalNormalizedCrossCorrelationLoss` (which returns ``−mean ρ²``) shifted to
    ``[0, 1]`` like :class:`~medtrans.losses.NGFLoss`: 0 where the two images are a local affine function of each
    other, of either sign, 1 where they are unrelated. Squared, the correlation ignores polarity, so a translation may
    invert the source's contrast (T1 → T2) and still score 0; unlike the NGF, which compares edge directions only, it
    asks that the tissues inside each window keep their order (or its reverse), which a global monotone intensity
    mapping satisfies exactly. Flat windows (background) have no correlation and add a constant. Only windows that
    lie inside the image count: MONAI's filtering pads with zeros, which would make the border windows depend on the
    images' offsets (a third of a 48³ patch's windows at side 7).

    Args:
        spatial_dims: 1, 2 or 3.
        kernel_size: odd side of the window (voxels).
        kernel_type: ``"rectangular"``, ``"triangular"`` or ``"gaussian"``.
        reduction: ``"mean"``, or ``"none"`` for the map of the windows inside the image.
        **kwargs: MONAI's ``smooth_nr``, ``smooth_dr``.
    """

    def __init__(self, spatial_dims: int = 3, kernel_size: int = 7, kernel_type: str = "rectangular",
                 reduction: str = "mean", **kwargs) -> None:
        if reduction not in ("mean", "none"):
            raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
        super().__init__(spatial_dims=spatial_dims, kernel_size=kernel_size, kernel_type=kernel_type, reduction="none",
                         **kwargs)
        self.valid_reduction = reduction

    def forward(self, source: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        """Loss between ``source`` and ``output``, both ``(B, C, *spatial)`` with every side at least ``kernel_size``;
        ``reduction="none"`` gives the map of the windows inside the image (each side shorter by ``kernel_size − 1``)."""
        if any(side < self.kernel_size for side in source.shape[2:]):
            raise ValueError(f"every spatial side must be >= kernel_size {self.kernel_size}, got {tuple(source.shape[2:])}")
        half = self.kernel_size // 2
        inside = (slice(None), slice(None), *(slice(half, side - half) for side in source.shape[2:]))
        loss = 1.0 + super().forward(output, source)[inside]
        return loss.mean() if self.valid_reduction == "mean" else loss
