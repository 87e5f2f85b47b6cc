"""Cycle-MedGAN's cycle-perceptual and cycle-style losses (Armanious et al., 2019/2020), on any feature extractor.

Plain cycle-consistency and identity terms are L1 distances (``torch.nn.L1Loss``) and need no module of their own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch.nn.modules.loss import _Loss

__all__ = ["CyclePerceptualLoss", "CycleStyleLoss", "gram_matrix"]


def gram_matrix(features: torch.Tensor) -> torch.Tensor:
    """Normalised Gram matrix ``Gr(m, n) = Σ_x F_m(x) F_n(x) / (C · N)`` of ``(B, C, *spatial)`` features, ``N`` voxels.

    Returns:
        ``(B, C, C)``.
    """
    b, c = features.shape[:2]
    f = features.reshape(b, c, -1)
    return torch.bmm(f, f.transpose(1, 2)) / (c * f.shape[2])


def _weights(weights: Sequence[float] | None, n: int) -> list[float]:
    if weights is None:
        return [1.0 / n] * n
    if len(weights) != n:
        raise ValueError(f"{len(weights)} layer weights for {n} feature maps")
    return list(weights)


class _FeatureLoss(_Loss):
    def __init__(self, feature_extractor: Callable[[torch.Tensor], list[torch.Tensor]], layer_weights: Sequence[float] | None) -> None:
        super().__init__()
        self._extractor = [feature_extractor]  # held by reference: owned (and checkpointed) by the method
        self.layer_weights = None if layer_weights is None else tuple(layer_weights)

    def _features(self, real: torch.Tensor, reconstructed: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        if real.shape != reconstructed.shape:
            raise ValueError(f"real {tuple(real.shape)} and reconstruction {tuple(reconstructed.shape)} shapes differ")
        extractor = self._extractor[0]
        with torch.no_grad():
            target = [f.detach() for f in extractor(real)]
        return list(zip(target, extractor(reconstructed)))


class CyclePerceptualLoss(_FeatureLoss):
    """Cycle-perceptual loss: ``Σ_i λ_i ‖F_i(x) − F_i(x̂)‖₁`` between an image and its cycle reconstruction.

    Cycle-MedGAN (Armanious et al., eq. 4) takes ``F_i`` from the discriminator's layers; any
    :class:`medtrans.networks.FeatureExtractor` works. The real image's features are targets (no gradient).

    Args:
        feature_extractor: callable returning a list of feature maps.
        layer_weights: ``λ_i`` (uniform, summing to 1, when ``None``).
    """

    def __init__(self, feature_extractor: Callable[[torch.Tensor], list[torch.Tensor]], layer_weights: Sequence[float] | None = None) -> None:
        super().__init__(feature_extractor, layer_weights)

    def forward(self, real: torch.Tensor, reconstructed: torch.Tensor) -> torch.Tensor:
        pairs = self._features(real, reconstructed)
        weights = _weights(self.layer_weights, len(pairs))
        return sum(w * (t - r).abs().mean() for w, (t, r) in zip(weights, pairs))


class CycleStyleLoss(_FeatureLoss):
    """Cycle-style loss: ``Σ_j λ_j / (4 C_j²) ‖Gr(F_j(x)) − Gr(F_j(x̂))‖²_F`` (Cycle-MedGAN eq. 5), batch-averaged.

    Args:
        feature_extractor: callable returning a list of feature maps.
        layer_weights: ``λ_j`` (uniform, summing to 1, when ``None``).
    """

    def __init__(self, feature_extractor: Callable[[torch.Tensor], list[torch.Tensor]], layer_weights: Sequence[float] | None = None) -> None:
        super().__init__(feature_extractor, layer_weights)

    def forward(self, real: torch.Tensor, reconstructed: torch.Tensor) -> torch.Tensor:
        pairs = self._features(real, reconstructed)
        weights = _weights(self.layer_weights, len(pairs))
        total = real.new_zeros(())
        for w, (t, r) in zip(weights, pairs):
            c = t.shape[1]
            diff = gram_matrix(t) - gram_matrix(r)
            total = total + w * (diff**2).sum(dim=(1, 2)).mean() / (4 * c * c)
        return total
