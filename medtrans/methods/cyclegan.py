"""CycleGAN (Zhu et al., ICCV 2017): two generators, two discriminators, cycle consistency."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from medtrans import defaults
from medtrans.methods.base import TranslationMethod
from medtrans.networks.pool import ImagePool

__all__ = ["CycleGAN"]

RESNET = "medtrans.networks.ResnetGenerator"
PATCHGAN = "medtrans.networks.patchgan"


class CycleGAN(TranslationMethod):
    """``G_ab, G_ba`` with discriminators ``D_a, D_b``:
    ``L = L_GAN(G_ab, D_b) + L_GAN(G_ba, D_a) + λ_cyc (‖G_ba(G_ab(a)) − a‖₁ + ‖G_ab(G_ba(b)) − b‖₁)
    + λ_cyc λ_idt (‖G_ab(b) − b‖₁ + ‖G_ba(a) − a‖₁)``.

    Defaults from the reference code: ResNet generators, 70×70 PatchGANs, LSGAN, λ_cyc = 10, image pools of 50, Adam
    2e-4, β₁ = 0.5. Both generators learn residuals on a start mapping (``start``, see :class:`TranslationMethod`):
    ``G_ab`` on the A→B mapping, ``G_ba`` on its inverse. Subclasses change the cycle terms through
    :meth:`cycle_terms`.

    Args:
        spatial_dims: 2 or 3.
        generator: network config of both generators.
        discriminator: network config of both discriminators.
        lambda_cycle: λ_cyc.
        lambda_identity: λ_idt (relative to λ_cyc, as in the reference code). Default: 0.5 (the reference code's) with
            ``start="none"``, else 0: the term asks ``G_ab`` to leave a B image as it is, which a start mapping that
            inverts the contrast contradicts.
        pool_size: image pool size.
        **kwargs: :class:`TranslationMethod` options.
    """

    name = "cyclegan"
    reverse_generator = "g_ba"

    def __init__(
        self,
        spatial_dims: int,
        generator: Mapping[str, Any] | None = None,
        discriminator: Mapping[str, Any] | None = None,
        lambda_cycle: float = 10.0,
        lambda_identity: float | None = None,
        pool_size: int = 50,
        **kwargs: Any,
    ) -> None:
        super().__init__(spatial_dims, **kwargs)
        c = self.in_channels
        self.build_generator(self.network_def(RESNET, defaults.RESNET_GENERATOR, generator, in_channels=c, out_channels=c),
                             attribute="g_ab")
        self.g_ba = self.build(self.generator_def)
        d_def = self.network_def(PATCHGAN, defaults.DISCRIMINATOR, discriminator, in_channels=c)
        self.build_discriminator("d_a", d_def)
        self.build_discriminator("d_b", d_def)
        self.pool_a, self.pool_b = ImagePool(pool_size), ImagePool(pool_size)
        self.lambda_cycle = lambda_cycle
        self.lambda_identity = (0.5 if self.start == "none" else 0.0) if lambda_identity is None else lambda_identity

    def optimizer_groups(self) -> dict[str, Iterable[nn.Parameter]]:
        return {
            "generator": [*self.g_ab.parameters(), *self.g_ba.parameters()],
            "discriminator": [*self.d_a.parameters(), *self.d_b.parameters()],
        }

    def cycle_terms(self, real_a, rec_a, real_b, rec_b) -> dict[str, tuple[float, torch.Tensor]]:
        """The cycle-consistency terms: ``{name: (weight, loss)}``."""
        return {"cycle": (self.lambda_cycle, F.l1_loss(rec_a, real_a) + F.l1_loss(rec_b, real_b))}

    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        real_a, real_b = batch["a"], batch["b"]
        fake_b = self.g_ab(real_a)
        rec_a = self.g_ba(fake_b)
        fake_a = self.g_ba(real_b)
        rec_b = self.g_ab(fake_a)

        def terms() -> dict[str, tuple[float, torch.Tensor]]:
            found = self.cycle_terms(real_a, rec_a, real_b, rec_b)
            identity_weight = self.lambda_cycle * self.lambda_identity
            if identity_weight > 0:  # both generators run once more, so skip it at weight 0
                identity = F.l1_loss(self.g_ab(real_b), real_b) + F.l1_loss(self.g_ba(real_a), real_a)
                found["identity"] = (identity_weight, identity)
            return found

        losses = self.two_sided_gan_step(real_a, real_b, fake_b, fake_a, terms, pools=(self.pool_a, self.pool_b))
        self.visuals = {"source": real_a, "output": fake_b, "reconstruction": rec_a}
        return losses
