import pytest
import torch

from medtrans.losses import LNCCLoss


@pytest.mark.parametrize("scale, offset", [(1.0, 0.0), (-1.0, 0.0), (-2.5, 0.3), (0.5, -0.7), (1.0, 5.0)])
def test_zero_for_any_local_affine_map_of_either_sign(brain_t1_t2, scale, offset):
    t1, _ = brain_t1_t2
    assert LNCCLoss(3)(t1, scale * t1 + offset).item() == pytest.approx(0.0, abs=1e-5)  # border windows too


def test_orders_the_true_t2_a_noisy_one_and_noise(brain_t1_t2):
    t1, t2 = brain_t1_t2
    torch.manual_seed(0)
    loss = LNCCLoss(3, kernel_size=7)
    real = loss(t1, t2).item()
    noisy = loss(t1, t2 + 0.3 * torch.randn_like(t2)).item()
    unrelated = loss(t1, torch.rand_like(t1)).item()
    assert 0.0 < real < noisy < unrelated <= 1.0  # a blotchy translation scores worse than the real T2
    assert loss(t1, torch.roll(t2, 4, dims=3)).item() > real + 0.05  # misaligned structure costs


def test_2d_on_a_brain_slice_has_gradient(brain_t1_slice):
    s = brain_t1_slice
    output = (0.2 * torch.randn_like(s) - s).requires_grad_(True)
    loss = LNCCLoss(2, kernel_size=5)(s, output)
    loss.backward()
    assert 0.0 < loss.item() < 1.0
    assert output.grad is not None and output.grad.abs().sum() > 0


def test_only_windows_inside_the_image(brain_t1_t2):
    t1, t2 = brain_t1_t2
    assert LNCCLoss(3, kernel_size=7, reduction="none")(t1, t2).shape == (1, 1, 42, 42, 42)
    with pytest.raises(ValueError, match="kernel_size 7"):
        LNCCLoss(3, kernel_size=7)(t1[..., :6], t2[..., :6])
