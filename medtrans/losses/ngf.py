"""Normalized gradient field (NGF) structure loss of NEC (Jaouen et al., ISBI 2024), N-D."""

from __future__ import annotations

import torch
from torch.nn.modules.loss import _Loss

__all__ = ["NGFLoss", "normalized_gradient_field", "spatial_gradient"]

_REDUCTIONS = ("mean", "sum", "none")


def spatial_gradient(image: torch.Tensor, spacing: tuple[float, ...] | None = None) -> torch.Tensor:
    """Central-difference gradient of every channel (one-sided at the border).

    Args:
        image: ``(B, C, *spatial)``.
        spacing: physical voxel size per spatial axis (voxel units when ``None``).

    Returns:
        ``(B, C, D, *spatial)`` with ``D = len(spatial)`` gradient components.
    """
    dims = tuple(range(2, image.ndim))
    if any(image.shape[d] < 2 for d in dims):
        raise ValueError(f"every spatial side must be >= 2 to take a gradient, got {tuple(image.shape[2:])}")
    grads = torch.gradient(image, spacing=list(spacing) if spacing is not None else 1.0, dim=dims)
    return torch.stack(grads, dim=2)


def normalized_gradient_field(image: torch.Tensor, eps: float, spacing: tuple[float, ...] | None = None) -> torch.Tensor:
    """``n_ε(I) = ∇I / (‖∇I‖ + ε)`` (NEC eq. 3), shape ``(B, C, D, *spatial)``.

    ``‖n_ε‖ < 1`` everywhere and ``→ 0`` where the image is flat, so noise-level gradients weigh little. The norm is
    computed as ``sqrt(‖∇I‖² + 1e-12)`` so its gradient stays finite on constant images.
    """
    grad = spatial_gradient(image, spacing)
    norm = torch.sqrt((grad * grad).sum(dim=2, keepdim=True) + 1e-12)
    return grad / (norm + eps)


class NGFLoss(_Loss):
    """NEC structure loss ``1 − ½⟨n_ε(s), n_ε(o)⟩²`` averaged over voxels (Jaouen et al., ISBI 2024, eqs. 3–4).

    ``s`` is the source image and ``o = G(s)`` the translation. The squared inner product ignores the sign and
    magnitude of edges, so the loss is unchanged when the output is ``±s + b`` (offset or contrast inversion), changes
    only through ``ε`` under rescaling, and grows when structures are misaligned; it stays finite with finite gradients
    on constant images. With perfectly aligned strong edges the per-voxel term tends to ½, on flat regions it is 1.

    ``ε`` sets which gradients count as edges: it is in image units per voxel, so fix the intensity range first (NEC
    uses ε = 0.15 on images scaled to [-1, 1]).

    Args:
        spatial_dims: 2 or 3.
        eps: ``ε`` of ``n_ε``.
        reduction: ``"mean"``, ``"sum"``, or ``"none"`` for the per-voxel map ``(B, 1, *spatial)`` (channels averaged),
            used by inference as the faithfulness map.
        spacing: physical voxel size per axis (voxel units when ``None``).

    Raises:
        ValueError: on a bad ``spatial_dims``, ``eps`` or ``reduction``, or inputs of different shapes.
    """

    def __init__(
        self,
        spatial_dims: int,
        eps: float = 0.15,
        reduction: str = "mean",
        spacing: tuple[float, ...] | None = None,
    ) -> None:
        if reduction not in _REDUCTIONS:
            raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
        super().__init__(reduction=reduction)
        if spatial_dims not in (1, 2, 3):
            raise ValueError(f"spatial_dims must be 1, 2 or 3, got {spatial_dims}")
        if eps <= 0:
            raise ValueError(f"eps must be > 0, got {eps}")
        if spacing is not None and len(spacing) != spatial_dims:
            raise ValueError(f"spacing needs {spatial_dims} values, got {spacing}")
        self.spatial_dims = spatial_dims
        self.eps = eps
        self.spacing = None if spacing is None else tuple(float(s) for s in spacing)

    def forward(self, source: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        """Args:
            source: ``(B, C, *spatial)`` source image ``s``.
            output: translation ``G(s)``, same shape.

        Returns:
            the reduced loss, or the ``(B, 1, *spatial)`` per-voxel map for ``reduction="none"``.
        """
        if source.shape != output.shape:
            raise ValueError(f"source {tuple(source.shape)} and output {tuple(output.shape)} shapes differ")
        if source.ndim != self.spatial_dims + 2:
            raise ValueError(f"expected (B, C, *spatial) with {self.spatial_dims} spatial dims, got {tuple(source.shape)}")
        n_s = normalized_gradient_field(source, self.eps, self.spacing)
        n_o = normalized_gradient_field(output, self.eps, self.spacing)
        inner = (n_s * n_o).sum(dim=2)  # (B, C, *spatial)
        per_voxel = (1.0 - 0.5 * inner**2).mean(dim=1, keepdim=True)
        if self.reduction == "mean":
            return per_voxel.mean()
        if self.reduction == "sum":
            return per_voxel.sum()
        return per_voxel
