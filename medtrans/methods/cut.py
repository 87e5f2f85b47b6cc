"""CUT and FastCUT (Park et al., ECCV 2020): one-sided translation with patch-wise contrastive learning."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from medtrans import defaults
from medtrans.losses import PatchNCELoss
from medtrans.methods.base import TranslationMethod
from medtrans.networks import PatchSampleMLP
from medtrans.networks.init import init_weights

__all__ = ["CUT"]

VARIANTS = {"cut": {"lambda_nce": 1.0, "nce_identity": True}, "fastcut": {"lambda_nce": 10.0, "nce_identity": False}}


class CUT(TranslationMethod):
    """``L = L_GAN(G, D) + λ_NCE · PatchNCE(a, G(a)) [+ λ_NCE · PatchNCE(b, G(b))]``.

    PatchNCE compares the generator's own encoder features of the source and of the output at the same sampled
    locations (256 per layer, through :class:`~medtrans.networks.PatchSampleMLP`), τ = 0.07. ``variant="cut"``: λ_NCE = 1
    with the identity NCE term; ``"fastcut"``: λ_NCE = 10 without it. LSGAN, no image pool, Adam 2e-4, β₁ = 0.5.

    Args:
        spatial_dims: 2 or 3.
        variant: ``"cut"`` or ``"fastcut"``.
        generator: config of a :class:`~medtrans.networks.ResnetGenerator` (its ``encode`` gives the features).
        discriminator: config of D.
        nce_layers: encoder feature indices (default: the generator's ``default_nce_layers``).
        num_patches: sampled locations per layer.
        temperature: τ.
        lambda_gan: weight of the adversarial term.
        lambda_nce: overrides the variant's λ_NCE.
        **kwargs: :class:`TranslationMethod` options.
    """

    name = "cut"

    def __init__(
        self,
        spatial_dims: int,
        variant: str = "cut",
        generator: Mapping[str, Any] | None = None,
        discriminator: Mapping[str, Any] | None = None,
        nce_layers: Sequence[int] | None = None,
        num_patches: int = 256,
        temperature: float = 0.07,
        lambda_gan: float = 1.0,
        lambda_nce: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(spatial_dims, **kwargs)
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {tuple(VARIANTS)}, got {variant!r}")
        c = self.in_channels
        self.build_generator(self.network_def("medtrans.networks.ResnetGenerator", defaults.RESNET_GENERATOR, generator,
                                              in_channels=c, out_channels=c))
        if not hasattr(self.net_g, "encode"):
            raise ValueError("CUT needs a generator with encode(x, layer_ids), e.g. medtrans.networks.ResnetGenerator")
        self.build_discriminator("net_d", self.network_def("medtrans.networks.patchgan", defaults.DISCRIMINATOR,
                                                           discriminator, in_channels=c))
        self.nce_layers = tuple(nce_layers) if nce_layers is not None else self.net_g.default_nce_layers
        # the head is initialised like the networks (the reference code's netF follows its init_type too)
        self.net_f = init_weights(PatchSampleMLP([self.net_g.feature_channels[i] for i in self.nce_layers]),
                                  self.init_type, self.init_gain)
        self.nce = PatchNCELoss(temperature)
        self.variant = variant
        self.num_patches = num_patches
        self.lambda_gan = lambda_gan
        self.lambda_nce = VARIANTS[variant]["lambda_nce"] if lambda_nce is None else lambda_nce
        self.nce_identity = VARIANTS[variant]["nce_identity"]

    def optimizer_groups(self) -> dict[str, Iterable[nn.Parameter]]:
        return {"generator": [*self.net_g.parameters(), *self.net_f.parameters()], "discriminator": self.net_d.parameters()}

    def patch_nce(self, source: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        """PatchNCE between a source and its translation through the generator's encoder."""
        feat_k, ids = self.net_f(self.net_g.encode(source, self.nce_layers), self.num_patches)
        feat_q, _ = self.net_f(self.net_g.encode(output, self.nce_layers), self.num_patches, ids)
        return self.nce(feat_q, feat_k, batch_size=source.shape[0])

    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        real_a, real_b = batch["a"], batch["b"]
        fake_b = self.net_g(real_a)

        def terms() -> dict[str, tuple[float, torch.Tensor]]:
            if not self.nce_identity:
                return {"nce": (self.lambda_nce, self.patch_nce(real_a, fake_b))}
            # CUT: the mean of the two NCE terms, each logged
            return {"nce": (0.5 * self.lambda_nce, self.patch_nce(real_a, fake_b)),
                    "nce_identity": (0.5 * self.lambda_nce, self.patch_nce(real_b, self.net_g(real_b)))}

        return self.gan_step(real_a, fake_b, real_b, terms, self.lambda_gan)
