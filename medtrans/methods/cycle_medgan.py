"""Cycle-MedGAN (Armanious et al., 2019/2020): CycleGAN whose cycle terms compare discriminator features."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from medtrans.losses import CyclePerceptualLoss, CycleStyleLoss
from medtrans.methods.cyclegan import CycleGAN
from medtrans.networks import DiscriminatorFeatures, PretrainedFeatures

__all__ = ["CycleMedGAN"]

FEATURE_TYPES = ("discriminator", "pretrained")


class CycleMedGAN(CycleGAN):
    """CycleGAN with cycle-perceptual and cycle-style losses between each image and its cycle reconstruction.

    ``L_cyc = λ_p Σ_i ‖F_i(x) − F_i(x̂)‖₁ + λ_s Σ_j ‖Gr(F_j(x)) − Gr(F_j(x̂))‖²_F / (4C_j²) (+ λ_L1 ‖x − x̂‖₁)`` for
    both domains, ``F`` being the features of the discriminator of the image's domain (as Cycle-MedGAN reads its
    discriminator) or of a cached pretrained network. Default weights are medtrans's choice (λ_p = 10 so the
    perceptual term starts on the scale of CycleGAN's λ_cyc L1 term; λ_s = 1000 because the normalised Gram
    differences are ~1e-4 of the perceptual ones); the L1 cycle term is off as in Cycle-MedGAN, which replaces it, and
    with it CycleGAN's identity term (weight λ_cyc λ_idt).

    Args:
        spatial_dims: 2 or 3.
        feature_type: ``"discriminator"`` or ``"pretrained"`` (then ``pretrained_network`` names a
            :data:`medtrans.networks.features.PRETRAINED_NETWORKS` entry, read from the torch hub cache only).
        lambda_perceptual: λ_p.
        lambda_style: λ_s.
        lambda_cycle: λ_L1 of a plain L1 cycle term kept beside them (0 by default).
        **kwargs: :class:`CycleGAN` options.
    """

    name = "cycle_medgan"

    def __init__(
        self,
        spatial_dims: int,
        feature_type: str = "discriminator",
        pretrained_network: str | None = None,
        lambda_perceptual: float = 10.0,
        lambda_style: float = 1000.0,
        lambda_cycle: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(spatial_dims, lambda_cycle=lambda_cycle, **kwargs)
        if feature_type not in FEATURE_TYPES:
            raise ValueError(f"feature_type must be one of {FEATURE_TYPES}, got {feature_type!r}")
        if feature_type == "pretrained":
            shared = PretrainedFeatures(pretrained_network or "", spatial_dims)
            self.features = shared
            features_a = features_b = shared
        else:
            features_a, features_b = DiscriminatorFeatures(self.d_a), DiscriminatorFeatures(self.d_b)
        self.perceptual = {"a": CyclePerceptualLoss(features_a), "b": CyclePerceptualLoss(features_b)}
        self.style = {"a": CycleStyleLoss(features_a), "b": CycleStyleLoss(features_b)}
        self.lambda_perceptual = lambda_perceptual
        self.lambda_style = lambda_style

    def cycle_terms(self, real_a, rec_a, real_b, rec_b) -> dict[str, tuple[float, torch.Tensor]]:
        terms = {
            "cycle_perceptual": (self.lambda_perceptual, self.perceptual["a"](real_a, rec_a) + self.perceptual["b"](real_b, rec_b)),
            "cycle_style": (self.lambda_style, self.style["a"](real_a, rec_a) + self.style["b"](real_b, rec_b)),
        }
        if self.lambda_cycle > 0:
            terms["cycle"] = (self.lambda_cycle, F.l1_loss(rec_a, real_a) + F.l1_loss(rec_b, real_b))
        return terms
