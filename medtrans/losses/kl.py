"""KL divergences of UNIT's VAE posteriors to a N(0, I) or a Gaussian-mixture prior."""

from __future__ import annotations

import math

import torch
from torch.nn.modules.loss import _Loss

from medtrans.networks.unit import GaussianMixturePrior

__all__ = ["GaussianKLLoss", "GaussianMixtureKLLoss"]


class GaussianKLLoss(_Loss):
    """``KL(N(μ, σ²) ‖ N(0, I)) = ½ (μ² + σ² − 1 − log σ²)`` per latent element, averaged over elements.

    With ``log_var=None`` the posterior has unit variance (UNIT) and the loss is ``½ mean(μ²)``. The UNIT reference code
    uses ``mean(μ²)``, twice this value, with weight 0.01; the closed form is kept here, so weight 0.02 reproduces it.
    """

    def forward(self, mu: torch.Tensor, log_var: torch.Tensor | None = None) -> torch.Tensor:
        if log_var is None:
            return 0.5 * (mu**2).mean()
        return 0.5 * (mu**2 + log_var.exp() - 1.0 - log_var).mean()


class GaussianMixtureKLLoss(_Loss):
    """Monte-Carlo ``KL(q(z|x) ‖ p(z)) ≈ log q(z|x) − log p(z)`` at a reparameterised sample ``z``.

    ``p`` is a :class:`~medtrans.networks.GaussianMixturePrior` over each location's latent vector; the KL has no
    closed form, so the single-sample estimate (unbiased, and differentiable in ``μ``, ``σ`` and the prior's
    parameters) is used. Divided by the latent channels so it is per element, comparable to :class:`GaussianKLLoss`.
    """

    def forward(self, z: torch.Tensor, mu: torch.Tensor, log_var: torch.Tensor, prior: GaussianMixturePrior) -> torch.Tensor:
        """Args:
            z: sample ``μ + σ·ε``, ``(B, C, *spatial)``.
            mu: posterior mean.
            log_var: posterior log-variance.
            prior: the mixture prior.
        """
        log_q = -0.5 * (((z - mu) ** 2) / log_var.exp() + log_var + math.log(2 * math.pi)).sum(dim=1)
        return (log_q - prior.log_prob(z)).mean() / z.shape[1]
