"""pix2pix (Isola et al., CVPR 2017): paired translation with a conditional PatchGAN and an L1 term."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from medtrans import defaults
from medtrans.methods.base import TranslationMethod

__all__ = ["Pix2Pix"]


class Pix2Pix(TranslationMethod):
    """``G: A → B`` trained on co-registered pairs: ``L = L_GAN(G, D) + λ_L1 ‖G(a) − b‖₁``, ``D`` conditioned on ``a``.

    Defaults from the paper / reference code: U-Net G, 70×70 PatchGAN D seeing ``[a, ·]`` (2 channels), vanilla (BCE)
    GAN loss, λ_L1 = 100, Adam 2e-4, β₁ = 0.5.

    Args:
        spatial_dims: 2 or 3.
        generator: network config of G (default U-Net).
        discriminator: network config of D (its ``in_channels`` is set to twice the image channels).
        lambda_l1: weight of the L1 term.
        init_type: weight initialisation; by default each network keeps its own (PyTorch's for MONAI's U-Net, N(0, 0.02)
            from MONAI's PatchDiscriminator): with the U-Net at N(0, 0.02) too, as in the reference code, NEC 3D did
            not flip T1 into T2 within 2,000 iterations (docs/notes.md, "Initialisation and upsampling").
        **kwargs: :class:`TranslationMethod` options (lr, precision, structure_losses, ...).
    """

    name = "pix2pix"
    paired = True

    def __init__(
        self,
        spatial_dims: int,
        generator: Mapping[str, Any] | None = None,
        discriminator: Mapping[str, Any] | None = None,
        lambda_l1: float = 100.0,
        adversarial_criterion: str = "bce",
        init_type: str = "default",
        **kwargs: Any,
    ) -> None:
        super().__init__(spatial_dims, adversarial_criterion=adversarial_criterion, init_type=init_type, **kwargs)
        c = self.in_channels
        self.build_generator(self.network_def("medtrans.networks.UNetGenerator", defaults.UNET_GENERATOR, generator,
                                              in_channels=c, out_channels=c))
        self.build_discriminator("net_d", self.network_def("medtrans.networks.patchgan", defaults.DISCRIMINATOR,
                                                           discriminator, in_channels=2 * c))
        self.lambda_l1 = lambda_l1

    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        real_a, real_b = batch["a"], batch["b"]
        fake_b = self.net_g(real_a)
        return self.gan_step(real_a, fake_b, real_b, lambda: {"g_l1": (self.lambda_l1, F.l1_loss(fake_b.float(), real_b.float()))},
                             condition=True)
