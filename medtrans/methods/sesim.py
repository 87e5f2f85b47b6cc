"""F/LSeSim (Zheng, Cham & Cai, CVPR 2021): translation kept structure-faithful by spatially-correlative maps."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from medtrans import defaults
from medtrans.losses import SpatialCorrelativeLoss
from medtrans.methods.base import TranslationMethod
from medtrans.networks import ConvFeatures, DiscriminatorFeatures

__all__ = ["SeSim"]

VARIANTS = ("fsesim", "lsesim")
FEATURE_TYPES = ("conv", "discriminator")


class SeSim(TranslationMethod):
    """``L = L_GAN(G, D) + λ_S · L_S(F(a), F(G(a)))``, ``L_S`` comparing self-similarity maps of sampled patches.

    Feature extractor — what we chose and why: the reference code uses an ImageNet VGG16, which is 2D, RGB and needs a
    download. medtrans uses :class:`~medtrans.networks.ConvFeatures`, an N-D convolutional pyramid it builds itself:
    frozen with seeded random weights for FSeSim (self-similarity of random convolutional features is a fixed,
    contrast-agnostic structure descriptor, in the spirit of MIND), trained for LSeSim by the paper's contrastive
    objective — the self-similarity maps of an image and of a structure-preserving intensity augmentation of it
    (random gamma and contrast) must match at the same location against other locations. ``feature_type=
    "discriminator"`` reads D's layers instead (as Cycle-MedGAN does). ConvFeatures keep their own initialisation
    whatever ``init_type``: it defines FSeSim's descriptor and is LSeSim's starting point.

    Defaults: ``variant="fsesim"`` with the cosine loss, λ_S = 1, 256 patches, window 32 in 2D / 8 in 3D; LSGAN;
    Adam 2e-4, β₁ = 0.5. The reference code's λ_S = 10 weighs its VGG features; against the random features above it
    let the self-similarity term outweigh the discriminator, and FSeSim's generator covered its output with a grid
    (docs/notes.md, "What the longer runs showed"); at λ_S = 1 it learned the T1→T2 flip without one.

    Args:
        spatial_dims: 2 or 3.
        variant: ``"fsesim"`` (fixed features, ``cos`` loss) or ``"lsesim"`` (learned features, ``info`` loss).
        feature_type: ``"conv"`` or ``"discriminator"``.
        feature_channels: widths of the ConvFeatures stages.
        generator: config of G (ResNet by default).
        discriminator: config of D.
        lambda_spatial: λ_S.
        patch_size: self-similarity window (default 32 in 2D, 8 in 3D).
        num_patches: sampled locations per layer.
        **kwargs: :class:`TranslationMethod` options.
    """

    name = "sesim"

    def __init__(
        self,
        spatial_dims: int,
        variant: str = "fsesim",
        feature_type: str = "conv",
        feature_channels: Sequence[int] = (16, 32, 64),
        generator: Mapping[str, Any] | None = None,
        discriminator: Mapping[str, Any] | None = None,
        lambda_spatial: float = 1.0,
        patch_size: int | None = None,
        num_patches: int = 256,
        **kwargs: Any,
    ) -> None:
        super().__init__(spatial_dims, **kwargs)
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        if feature_type not in FEATURE_TYPES:
            raise ValueError(f"feature_type must be one of {FEATURE_TYPES}, got {feature_type!r}")
        if variant == "lsesim" and feature_type != "conv":
            raise ValueError("lsesim learns its own ConvFeatures extractor: use feature_type='conv'")
        c = self.in_channels
        self.build_generator(self.network_def("medtrans.networks.ResnetGenerator", defaults.RESNET_GENERATOR, generator,
                                              in_channels=c, out_channels=c))
        self.build_discriminator("net_d", self.network_def("medtrans.networks.patchgan", defaults.DISCRIMINATOR,
                                                           discriminator, in_channels=c))
        self.variant = variant
        if feature_type == "conv":
            self.net_f = ConvFeatures(spatial_dims, c, feature_channels)
            self.net_f.requires_grad_(variant == "lsesim")
            self.features = self.net_f
        else:
            self.features = DiscriminatorFeatures(self.net_d)
        window = patch_size or (32 if spatial_dims == 2 else 8)
        loss_type = "info" if variant == "lsesim" else "cos"
        self.spatial = SpatialCorrelativeLoss(loss_type, window, num_patches)
        self.feature_loss = SpatialCorrelativeLoss("info", window, num_patches, detach_source=False)
        self.lambda_spatial = lambda_spatial

    def optimizer_groups(self) -> dict[str, Iterable[nn.Parameter]]:
        groups = {"generator": self.net_g.parameters(), "discriminator": self.net_d.parameters()}
        if self.variant == "lsesim":
            groups["features"] = self.net_f.parameters()
        return groups

    @staticmethod
    def augment(x: torch.Tensor) -> torch.Tensor:
        """Structure-preserving intensity change per sample: random gamma in [0.5, 2] and contrast in [0.6, 1.4]."""
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        gamma = torch.exp(torch.empty(shape, device=x.device).uniform_(-0.693, 0.693))
        contrast = torch.empty(shape, device=x.device).uniform_(0.6, 1.4)
        unit = ((x + 1) / 2).clamp(0, 1) ** gamma
        return (unit * 2 - 1) * contrast

    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        real_a, real_b = batch["a"], batch["b"]
        losses: dict[str, torch.Tensor] = {}
        if self.variant == "lsesim":
            both = torch.cat([real_a, real_b])
            loss_f = self.feature_loss(self.net_f(both), self.net_f(self.augment(both)))
            self.optimize("features", loss_f)
            losses["features"] = loss_f.detach()
        fake_b = self.net_g(real_a)
        frozen = [self.net_f] if self.variant == "lsesim" else []
        spatial = lambda: {"spatial": (self.lambda_spatial, self.spatial(self.features(real_a), self.features(fake_b)))}  # noqa: E731
        return {**losses, **self.gan_step(real_a, fake_b, real_b, spatial, frozen=frozen)}
