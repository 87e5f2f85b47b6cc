"""UNIT (Liu, Breuel & Kautz, NeurIPS 2017) and its patch-based Gaussian-mixture-prior variant."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from medtrans import defaults
from medtrans.losses import GaussianKLLoss, GaussianMixtureKLLoss
from medtrans.methods.base import TranslationMethod

__all__ = ["UNITMethod"]


class UNITMethod(TranslationMethod):
    """Two VAE-GANs with a shared latent space, trained with reconstruction, KL, cycle and adversarial terms:

    ``L = λ_GAN (L_GAN(D_a, x_ba) + L_GAN(D_b, x_ab)) + λ_x (‖x_aa − a‖₁ + ‖x_bb − b‖₁) + λ_KL (KL_a + KL_b)
    + λ_cyc (‖x_aba − a‖₁ + ‖x_bab − b‖₁) + λ_KLcyc (KL_ab + KL_ba)``.

    Defaults from the UNIT reference configuration: λ_GAN = 1, λ_x = 10, λ_KL = 0.01, λ_cyc = 10, λ_KLcyc = 0.01, LSGAN
    with multi-resolution discriminators, Adam 1e-4, β₁ = 0.5, weight decay 1e-4. ``prior_type="gaussian_mixture"``
    gives the patch-based mixture-of-Gaussians variant (learned posterior variance, Monte-Carlo KL to a learnable GMM).

    Args:
        spatial_dims: 2 or 3.
        generator: extra arguments of :class:`~medtrans.networks.UNIT` (channels, blocks, prior_type, ...).
        discriminator: config of both discriminators.
        prior_type: shortcut for ``generator["prior_type"]``.
        start: ``"none"`` only: UNIT's decoders both reconstruct their own domain and translate into it from the
            shared latent, so they cannot learn a residual over a start mapping.
        **kwargs: :class:`TranslationMethod` options.
    """

    name = "unit"

    def __init__(
        self,
        spatial_dims: int,
        generator: Mapping[str, Any] | None = None,
        discriminator: Mapping[str, Any] | None = None,
        prior_type: str = "normal",
        lambda_gan: float = 1.0,
        lambda_recon: float = 10.0,
        lambda_kl: float = 0.01,
        lambda_cycle: float = 10.0,
        lambda_kl_cycle: float = 0.01,
        lr: float = 1e-4,
        weight_decay: float = 1e-4,
        start: str = "none",
        **kwargs: Any,
    ) -> None:
        if start != "none":
            raise ValueError(f"UNIT has no start mapping (start={start!r}): its decoders reconstruct as well as translate")
        super().__init__(spatial_dims, lr=lr, weight_decay=weight_decay, start=start, **kwargs)
        c = self.in_channels
        self.build_generator(self.network_def("medtrans.networks.UNIT", {**defaults.UNIT_GENERATOR, "prior_type": prior_type},
                                              generator, in_channels=c))
        d_def = self.network_def("medtrans.networks.MultiResolutionDiscriminator",
                                 {**defaults.DISCRIMINATOR, "num_scales": defaults.discriminator_scales(spatial_dims)},
                                 discriminator, in_channels=c)
        self.build_discriminator("d_a", d_def)
        self.build_discriminator("d_b", d_def)
        self.kl_normal = GaussianKLLoss()
        self.kl_mixture = GaussianMixtureKLLoss()
        self.weights = {"gan": lambda_gan, "recon": lambda_recon, "kl": lambda_kl, "cycle": lambda_cycle, "kl_cycle": lambda_kl_cycle}

    def optimizer_groups(self) -> dict[str, Iterable[nn.Parameter]]:
        return {"generator": self.net_g.parameters(), "discriminator": [*self.d_a.parameters(), *self.d_b.parameters()]}

    def _encode(self, x: torch.Tensor, domain: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Posterior mean, a reparameterised sample, and the KL of that posterior to the prior."""
        mu, log_var = self.net_g.encode(x, domain)
        z = self.net_g.reparameterize(mu, log_var)
        if self.net_g.prior is None:
            kl = self.kl_normal(mu, log_var)
        else:
            kl = self.kl_mixture(z.float(), mu.float(), log_var.float(), self.net_g.prior)
        return mu, z, kl

    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        x_a, x_b = batch["a"], batch["b"]
        g, w = self.net_g, self.weights
        _, z_a, kl_a = self._encode(x_a, "a")
        _, z_b, kl_b = self._encode(x_b, "b")
        x_aa, x_bb = g.decode(z_a, "a"), g.decode(z_b, "b")
        x_ab, x_ba = g.decode(z_a, "b"), g.decode(z_b, "a")
        _, z_ab, kl_ab = self._encode(x_ab, "b")
        _, z_ba, kl_ba = self._encode(x_ba, "a")
        x_aba, x_bab = g.decode(z_ab, "a"), g.decode(z_ba, "b")
        recon = F.l1_loss(x_aa, x_a) + F.l1_loss(x_bb, x_b)
        cycle = F.l1_loss(x_aba, x_a) + F.l1_loss(x_bab, x_b)
        terms = {"recon": (w["recon"], recon), "cycle": (w["cycle"], cycle), "kl": (w["kl"], kl_a + kl_b),
                 "kl_cycle": (w["kl_cycle"], kl_ab + kl_ba)}
        losses = self.two_sided_gan_step(x_a, x_b, x_ab, x_ba, lambda: terms, lambda_gan=w["gan"])
        self.visuals = {"source": x_a, "output": x_ab, "reconstruction": x_aba}
        return losses
