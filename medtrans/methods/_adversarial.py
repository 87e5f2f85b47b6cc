"""The adversarial updates the methods share: the discriminator and generator losses, and the one-sided
(:meth:`AdversarialMixin.gan_step`) and two-sided (:meth:`AdversarialMixin.two_sided_gan_step`) GAN steps.

:class:`AdversarialMixin` is a base of :class:`~medtrans.methods.base.TranslationMethod`; it uses the options that
class stores (``adversarial_loss``, ``lambda_negative``, ``negative_type``, ``structure_specs``, ``lambda_start``, and
the discriminator remedies ``d_augment``, ``instance_noise`` and ``r1_gamma``) and its :meth:`optimize`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from medtrans import defaults
from medtrans.data.intensity import histogram_match_batch
from medtrans.errors import DivergenceError
from medtrans.losses.discriminator import diff_augment, instance_noise, r1_penalty
from medtrans.losses.structure import schedule_factor
from medtrans.networks import discriminator_logits
from medtrans.networks.pool import ImagePool

__all__ = ["AdversarialMixin"]


class AdversarialMixin:
    """Adversarial losses and GAN updates of a :class:`~medtrans.methods.base.TranslationMethod`."""

    @staticmethod
    def set_requires_grad(networks: Iterable[nn.Module], flag: bool) -> None:
        for net in networks:
            net.requires_grad_(flag)

    def _logits(self, discriminator: nn.Module, image: torch.Tensor) -> list[torch.Tensor]:
        logits = discriminator_logits(discriminator(image))
        if not all(torch.isfinite(t.detach()).all() for t in logits):
            raise DivergenceError(
                f"{type(self).__name__}: a discriminator output is nan/inf at iteration {self.iteration}; training "
                "stopped, the last checkpoint is the last good one (lower the learning rate or use fp32)"
            )
        return logits

    def _judged(self, discriminator: nn.Module, image: torch.Tensor) -> list[torch.Tensor]:
        """The logits of ``discriminator`` on ``image`` as it sees every image: with instance noise and augmentation
        when configured."""
        image = instance_noise(image, self.instance_noise, self.iteration, self.total_iterations)
        return self._logits(discriminator, diff_augment(image, self.d_augment) if self.d_augment else image)

    def generator_adversarial(self, discriminator: nn.Module, fake: torch.Tensor) -> torch.Tensor:
        """The generator's adversarial loss: ``fake`` should be judged real."""
        return self.adversarial_loss(self._judged(discriminator, fake), target_is_real=True, for_discriminator=False)

    def discriminator_adversarial(self, discriminator: nn.Module, real: torch.Tensor, fake: torch.Tensor,
                                  negative: torch.Tensor | None = None) -> torch.Tensor:
        """½ (real judged real + fake judged fake), the fake detached; with ``lambda_negative`` > 0, plus
        ½ λ · ``negative`` (a real image of the other domain, histogram-matched to ``real`` when ``negative_type`` is
        ``"histogram_matched"``) judged fake; with ``r1_gamma`` > 0, every :data:`~medtrans.defaults.R1_INTERVAL`-th
        iteration, plus ``R1_INTERVAL · γ/2 · E‖∇D(real)‖²`` (lazy regularisation, as StyleGAN2)."""
        loss_real = self.adversarial_loss(self._judged(discriminator, real), target_is_real=True)
        loss_fake = self.adversarial_loss(self._judged(discriminator, fake.detach()), target_is_real=False)
        if negative is not None and self.lambda_negative > 0:
            if self.negative_type == "histogram_matched":
                negative = histogram_match_batch(negative, real)
            loss_fake = loss_fake + self.lambda_negative * self.adversarial_loss(
                self._judged(discriminator, negative), target_is_real=False)
        loss = 0.5 * (loss_real + loss_fake)
        if self.r1_gamma > 0 and self.iteration % defaults.R1_INTERVAL == 0:
            penalty = r1_penalty(lambda x: self._judged(discriminator, x), real)
            loss = loss + 0.5 * self.r1_gamma * defaults.R1_INTERVAL * penalty
        return loss

    def structure_penalty(self, source: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        """Weighted sum of the configured extra structure losses between a source and its translation; a term with
        ``"warmup": [start, end]`` weighs 0 before iteration ``start`` and reaches its weight at ``end``, linearly, one
        with ``"cooldown": [start, end]`` weighs its weight until ``start`` and falls to 0 at ``end``."""
        total = source.new_zeros((), dtype=torch.float32)
        for spec, term in zip(self.structure_specs, self.structure_terms):
            ramp = schedule_factor(spec, self.iteration)
            if ramp > 0:
                total = total + ramp * float(spec.get("weight", 1.0)) * term(source.float(), output.float())
        return total

    def gan_step(
        self,
        source: torch.Tensor,
        output: torch.Tensor,
        target: torch.Tensor,
        generator_terms: Callable[[], Mapping[str, tuple[float, torch.Tensor]]],
        lambda_gan: float = 1.0,
        condition: bool = False,
        frozen: Sequence[nn.Module] = (),
    ) -> dict[str, torch.Tensor]:
        """The one-sided GAN update: the discriminator (:attr:`target_discriminator`) on ``target`` (real) against
        ``output`` (fake), then the generator on ``λ_GAN · L_GAN + Σ weight · term + structure losses + λ_start ·
        start``.

        Args:
            source: the generator's input (structure losses compare it with ``output``).
            output: the translation.
            target: a real image of the target domain.
            generator_terms: called once the discriminator is frozen; returns ``{name: (weight, loss)}``.
            lambda_gan: weight of the generator's adversarial term.
            condition: the discriminator sees ``[source, image]`` (pix2pix's conditional PatchGAN).
            frozen: further networks to freeze during the generator update.

        Returns:
            ``g_gan``, every generator term, ``structure`` (when structure losses are configured) and ``d``.
        """
        discriminator = self.target_discriminator
        real, fake = (torch.cat([source, target], 1), torch.cat([source, output], 1)) if condition else (target, output)
        loss_d = self.discriminator_adversarial(discriminator, real, fake, None if condition else source)
        self.optimize("discriminator", loss_d)
        frozen = [discriminator, *frozen]
        self.set_requires_grad(frozen, False)
        loss_gan = self.generator_adversarial(discriminator, fake)
        losses = self._generator_update(lambda_gan * loss_gan, generator_terms(), [(source, output)], start=True)
        self.set_requires_grad(frozen, True)
        self.visuals = {"source": source, "output": output, "target": target}
        return {"g_gan": loss_gan, **losses, "d": loss_d}

    def two_sided_gan_step(
        self,
        real_a: torch.Tensor,
        real_b: torch.Tensor,
        fake_b: torch.Tensor,
        fake_a: torch.Tensor,
        generator_terms: Callable[[], Mapping[str, tuple[float, torch.Tensor]]],
        lambda_gan: float = 1.0,
        pools: tuple[ImagePool, ImagePool] | None = None,
    ) -> dict[str, torch.Tensor]:
        """The two-sided GAN update (CycleGAN, UNIT): the generators first, on ``λ_GAN · (L_GAN(D_b, fake_b) +
        L_GAN(D_a, fake_a)) + Σ weight · term + structure losses`` (both directions), then the discriminators ``d_a``
        and ``d_b``, each on its real images against the translations into its domain, with the other domain's real
        images as negatives (``lambda_negative``).

        Args:
            real_a, real_b: the real images of the two domains.
            fake_b, fake_a: their translations (A→B and B→A).
            generator_terms: called once the discriminators are frozen; returns ``{name: (weight, loss)}``.
            lambda_gan: weight of the generators' adversarial terms.
            pools: image pools of translations into A and into B (the discriminators see a pooled history).

        Returns:
            ``g_gan``, every generator term, ``structure`` (when structure losses are configured) and ``d``.
        """
        discriminators = [self.d_a, self.d_b]
        self.set_requires_grad(discriminators, False)
        loss_gan = self.generator_adversarial(self.d_b, fake_b) + self.generator_adversarial(self.d_a, fake_a)
        losses = self._generator_update(lambda_gan * loss_gan, generator_terms(), [(real_a, fake_b), (real_b, fake_a)])
        self.set_requires_grad(discriminators, True)
        judged_a, judged_b = (pools[0].query(fake_a), pools[1].query(fake_b)) if pools else (fake_a, fake_b)
        loss_d = (self.discriminator_adversarial(self.d_b, real_b, judged_b, real_a)
                  + self.discriminator_adversarial(self.d_a, real_a, judged_a, real_b))
        self.optimize("discriminator", loss_d)
        return {"g_gan": loss_gan, **losses, "d": loss_d}

    def _generator_update(self, loss: torch.Tensor, terms: Mapping[str, tuple[float, torch.Tensor]],
                          translations: Sequence[tuple[torch.Tensor, torch.Tensor]], start: bool = False
                          ) -> dict[str, torch.Tensor]:
        """Step the generator(s) on ``loss`` + the weighted ``terms`` + the structure losses of each ``(source,
        translation)`` (+ the pull towards the start mapping with ``start``); returns the unweighted terms."""
        losses = {name: term for name, (_, term) in terms.items()}
        loss = loss + sum(weight * term for weight, term in terms.values())
        if self.structure_specs:
            losses["structure"] = sum(self.structure_penalty(s, t) for s, t in translations)
            loss = loss + losses["structure"]
        if start and self.lambda_start > 0 and self.start_mapping is not None and self.start_mapping.type != "none":
            source, output = translations[0]
            losses["start"] = F.l1_loss(output.float(), self.generator.start(source).float())
            loss = loss + self.lambda_start * losses["start"]
        self.optimize("generator", loss)
        return losses
