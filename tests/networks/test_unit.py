import pytest
import torch

from medtrans.losses import GaussianKLLoss, GaussianMixtureKLLoss
from medtrans.networks import UNIT


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("prior_type", ["normal", "gaussian_mixture"])
def test_unit_round_trip_shapes_and_gradients(dims, prior_type, seeded):
    net = UNIT(dims, channels=4, num_res_blocks=2, num_shared_blocks=1, prior_type=prior_type, num_components=3)
    xa = torch.randn((1, 1) + (16,) * dims)
    xb = torch.randn((1, 1) + (16,) * dims)
    total = 0
    for x, src, dst in ((xa, "a", "b"), (xb, "b", "a")):
        mu, log_var = net.encode(x, src)
        assert mu.shape == (1, 16) + (4,) * dims
        assert (log_var is None) == (prior_type == "normal")
        z = net.reparameterize(mu, log_var)
        recon = net.decode(z, src)
        translated = net.decode(z, dst)
        assert recon.shape == x.shape == translated.shape
        if prior_type == "normal":
            kl = GaussianKLLoss()(mu)
        else:
            kl = GaussianMixtureKLLoss()(z, mu, log_var, net.prior)
        total = total + (recon - x).abs().mean() + translated.square().mean() + 0.01 * kl
    total.backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert not missing, f"no gradient for {missing}"
    assert net(xa).shape == xa.shape


def test_shared_layers_are_shared_and_translation_is_deterministic(seeded):
    net = UNIT(2, channels=4, num_res_blocks=3, num_shared_blocks=2).eval()
    assert len(net.shared_encoder) == 2 and len(net.encoders["a"]) == 1 + 2 + 1
    x = torch.randn(1, 1, 16, 16)
    assert torch.equal(net(x), net(x))
    assert torch.equal(net(x), net.translate(x, "a", "b"))
    with pytest.raises(ValueError, match="prior_type"):
        UNIT(2, prior_type="laplace")
