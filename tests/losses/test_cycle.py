import pytest
import torch

from medtrans.losses import CyclePerceptualLoss, CycleStyleLoss, gram_matrix
from medtrans.networks import DiscriminatorFeatures, patchgan


def test_gram_matrix_hand_computed():
    f = torch.tensor([[1.0, 2.0, 3.0], [0.0, 1.0, -1.0]]).view(1, 2, 3, 1)  # C = 2, N = 3
    # F Fᵀ = [[14, -1], [-1, 2]], divided by C·N = 6
    expected = torch.tensor([[14.0, -1.0], [-1.0, 2.0]]) / 6
    assert torch.allclose(gram_matrix(f)[0], expected)


def test_style_loss_hand_computed():
    a = torch.tensor([[1.0, 2.0, 3.0], [0.0, 1.0, -1.0]]).view(1, 2, 3, 1)
    b = torch.zeros_like(a)
    loss = CycleStyleLoss(lambda x: [x])
    # ‖Gr(a) − 0‖²_F / (4 C²) = (14² + 2·1 + 2²)/36 / 16
    assert loss(a, b).item() == pytest.approx((196 + 2 + 4) / 36 / 16)


@pytest.mark.parametrize("dims", [2, 3])
def test_perceptual_and_style_on_discriminator_features(dims, seeded):
    disc = patchgan(dims, channels=8)
    features = DiscriminatorFeatures(disc)
    real = torch.rand((1, 1) + (24,) * dims)
    recon = (real + 0.3 * torch.randn_like(real)).requires_grad_()
    for loss_type in (CyclePerceptualLoss, CycleStyleLoss):
        loss = loss_type(features)
        assert loss(real, real.clone()).item() == pytest.approx(0.0, abs=1e-7)
        value = loss(real, recon)
        assert value.item() > 0
        recon.grad = None
        value.backward()
        assert recon.grad.abs().sum() > 0
    assert list(features.parameters()) == []  # the discriminator is referenced, not owned


def test_layer_weights_are_checked():
    loss = CyclePerceptualLoss(lambda x: [x, x], layer_weights=[1.0])
    with pytest.raises(ValueError, match="layer weights"):
        loss(torch.rand(1, 1, 4, 4), torch.rand(1, 1, 4, 4))
