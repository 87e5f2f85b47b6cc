import pytest
import torch
from torch.distributions import Normal, kl_divergence

from medtrans.losses import GaussianKLLoss, GaussianMixtureKLLoss
from medtrans.networks import GaussianMixturePrior


def test_gaussian_kl_matches_closed_form(seeded):
    mu = torch.randn(2, 4, 3, 3)
    log_var = torch.randn(2, 4, 3, 3) * 0.3
    expected = kl_divergence(Normal(mu, (0.5 * log_var).exp()), Normal(0.0, 1.0)).mean()
    assert GaussianKLLoss()(mu, log_var).item() == pytest.approx(expected.item(), rel=1e-5)
    assert GaussianKLLoss()(mu).item() == pytest.approx(0.5 * (mu**2).mean().item(), rel=1e-6)


def test_mixture_kl_estimate_agrees_with_closed_form_for_one_component(seeded):
    prior = GaussianMixturePrior(num_components=1, latent_channels=3)
    with torch.no_grad():
        prior.means.zero_()
    mu = torch.randn(4, 3, 16, 16) * 0.5
    log_var = torch.full_like(mu, -0.5)
    z = mu + torch.randn_like(mu) * (0.5 * log_var).exp()
    estimate = GaussianMixtureKLLoss()(z, mu, log_var, prior)
    assert estimate.item() == pytest.approx(GaussianKLLoss()(mu, log_var).item(), abs=0.02)


def test_mixture_log_prob_and_gradients(seeded):
    prior = GaussianMixturePrior(num_components=3, latent_channels=2)
    z = torch.randn(1, 2, 4, 4)
    weights = torch.softmax(prior.logits, 0)
    comps = [Normal(prior.means[k], (0.5 * prior.log_vars[k]).exp()) for k in range(3)]
    zc = z.movedim(1, -1)
    manual = torch.log(sum(weights[k] * comps[k].log_prob(zc).sum(-1).exp() for k in range(3)))
    assert torch.allclose(prior.log_prob(z), manual, atol=1e-5)
    mu = torch.zeros(1, 2, 4, 4, requires_grad=True)
    log_var = torch.zeros(1, 2, 4, 4, requires_grad=True)
    GaussianMixtureKLLoss()(mu + torch.randn_like(mu), mu, log_var, prior).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in (prior.means, prior.log_vars, mu, log_var))
    assert prior.sample((2, 2, 3, 3)).shape == (2, 2, 3, 3)
