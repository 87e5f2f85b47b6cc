"""NEC (Jaouen et al., ISBI 2024): a GAN kept faithful to the source by a normalised gradient field loss."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from medtrans import defaults
from medtrans.losses import NGFLoss
from medtrans.methods.base import TranslationMethod

__all__ = ["NEC"]


class NEC(TranslationMethod):
    """``L = λ_GAN L_GAN(G, D) + λ_NGF · mean_x [1 − ½⟨n_ε(a), n_ε(G(a))⟩²]`` (NEC eqs. 3–4).

    One generator (U-Net by default), a pix2pixHD multi-resolution PatchGAN discriminator (3 layers; as many scales as
    the default patch of ``spatial_dims`` allows, see :func:`medtrans.defaults.discriminator_scales`), BCE adversarial
    loss, ε = 0.15 on [-1, 1] images (the paper's setting). The NGF term ignores contrast polarity, so the generator is
    free to invert T1 into T2 while edges must stay where the source has them. λ_NGF = 1 is medtrans's default
    (configurable). When a run crosses from the source's contrast to the inverse is left to chance, though; for T1→T2,
    ``structure_losses=[{"type": "polarity", "weight": 10, "cooldown": [0, 200]}, {"type": "mi"}]`` starts it there
    and keeps it (``bundles/nec/configs/t1_t2.yaml``; docs/notes.md, "A polarity prior, then mutual information").

    Args:
        spatial_dims: 2 or 3.
        generator: config of G.
        discriminator: config of D (default ``MultiResolutionDiscriminator``).
        eps: ε of the NGF.
        lambda_ngf: λ_NGF.
        lambda_gan: λ_GAN.
        init_type: weight initialisation; by default each network keeps its own (PyTorch's for MONAI's U-Net, N(0, 0.02)
            from MONAI's PatchDiscriminator): with the U-Net at N(0, 0.02) too, as in the reference code, NEC 3D did
            not flip T1 into T2 within 2,000 iterations (docs/notes.md, "Initialisation and upsampling").
        **kwargs: :class:`TranslationMethod` options.
    """

    name = "nec"

    def __init__(
        self,
        spatial_dims: int,
        generator: Mapping[str, Any] | None = None,
        discriminator: Mapping[str, Any] | None = None,
        eps: float = 0.15,
        lambda_ngf: float = 1.0,
        lambda_gan: float = 1.0,
        adversarial_criterion: str = "bce",
        init_type: str = "default",
        **kwargs: Any,
    ) -> None:
        super().__init__(spatial_dims, adversarial_criterion=adversarial_criterion, init_type=init_type, **kwargs)
        c = self.in_channels
        self.build_generator(self.network_def("medtrans.networks.UNetGenerator", defaults.UNET_GENERATOR, generator,
                                              in_channels=c, out_channels=c))
        self.build_discriminator("net_d", self.network_def(
            "medtrans.networks.MultiResolutionDiscriminator",
            {**defaults.DISCRIMINATOR, "num_scales": defaults.discriminator_scales(spatial_dims)}, discriminator, in_channels=c))
        self.ngf = NGFLoss(spatial_dims, eps=eps)
        self.lambda_ngf = lambda_ngf
        self.lambda_gan = lambda_gan

    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        real_a, real_b = batch["a"], batch["b"]
        fake_b = self.net_g(real_a)
        return self.gan_step(real_a, fake_b, real_b, lambda: {"ngf": (self.lambda_ngf, self.ngf(real_a.float(), fake_b.float()))},
                             self.lambda_gan)
