import pytest
import torch

from medtrans.losses import NGFLoss, normalized_gradient_field


@pytest.mark.parametrize("sign", [1.0, -1.0])
@pytest.mark.parametrize("offset", [0.0, 0.7])
def test_unchanged_under_offset_and_contrast_inversion(brain_t1_t2, sign, offset):
    t1, _ = brain_t1_t2
    loss = NGFLoss(spatial_dims=3, eps=0.15)
    reference = loss(t1, t1)
    assert loss(t1, sign * t1 + offset).item() == pytest.approx(reference.item(), abs=1e-6)


def test_rescaling_acts_only_through_eps(brain_t1_t2):
    t1, _ = brain_t1_t2
    a = 3.0
    # n_{aε}(a·s) = n_ε(s): rescaling the image by a is exactly rescaling ε by a
    assert NGFLoss(3, eps=0.15)(t1, t1).item() == pytest.approx(NGFLoss(3, eps=0.15 * a)(t1 * a, a * t1).item(), abs=1e-6)
    # at fixed ε a rescaled output changes the loss (stronger edges count more)
    assert NGFLoss(3, eps=0.15)(t1, a * t1).item() < NGFLoss(3, eps=0.15)(t1, t1).item() - 1e-3


def test_grows_under_misalignment_of_a_t1_t2_pair(brain_t1_t2):
    t1, t2 = brain_t1_t2
    loss = NGFLoss(3, eps=0.15)
    aligned = loss(t1, t2).item()
    for shift in (2, 4):
        for dim in (2, 3, 4):
            assert loss(t1, torch.roll(t2, shift, dims=dim)).item() > aligned + 1e-3
    assert loss(t1, t1).item() < aligned  # the same image is better aligned than its real T2


def test_2d_on_a_brain_slice(brain_t1_slice):
    s = brain_t1_slice
    loss = NGFLoss(2, eps=0.15)
    assert loss(s, 1.0 - s).item() == pytest.approx(loss(s, s).item(), abs=1e-6)
    assert loss(s, torch.roll(s, 3, dims=2)).item() > loss(s, s).item() + 1e-2


def test_constant_images_finite_with_finite_gradients():
    source = torch.zeros(2, 1, 8, 8, 8, requires_grad=True)
    output = torch.full((2, 1, 8, 8, 8), 0.3, requires_grad=True)
    value = NGFLoss(3)(source, output)
    value.backward()
    assert value.item() == pytest.approx(1.0)  # no edges anywhere: the loss is at its maximum
    assert torch.isfinite(source.grad).all() and torch.isfinite(output.grad).all()


def test_reduction_none_is_the_per_voxel_map(brain_t1_t2):
    t1, t2 = brain_t1_t2
    per_voxel = NGFLoss(3, reduction="none")(t1, t2)
    assert per_voxel.shape == (1, 1, 48, 48, 48)
    assert per_voxel.mean().item() == pytest.approx(NGFLoss(3)(t1, t2).item(), rel=1e-6)
    assert ((per_voxel >= 0.5 - 1e-6) & (per_voxel <= 1 + 1e-6)).all()


def test_field_matches_formula_on_a_ramp():
    # I = 2x: central differences give ∇I = (2, 0), so n_ε = 2 / (2 + ε) along x
    x = torch.arange(6.0).view(1, 1, 6, 1).expand(1, 1, 6, 5) * 2
    n = normalized_gradient_field(x, eps=0.5)
    assert torch.allclose(n[:, :, 0], torch.full_like(n[:, :, 0], 2 / 2.5))
    assert torch.allclose(n[:, :, 1], torch.zeros_like(n[:, :, 1]))


def test_gradient_reaches_output_and_bad_input_is_rejected():
    s = torch.rand(1, 1, 10, 10)
    o = torch.rand(1, 1, 10, 10, requires_grad=True)
    NGFLoss(2)(s, o).backward()
    assert o.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="shapes differ"):
        NGFLoss(2)(s, torch.rand(1, 1, 10, 12))
    with pytest.raises(ValueError, match="eps"):
        NGFLoss(2, eps=0)
    with pytest.raises(ValueError, match="reduction"):
        NGFLoss(2, reduction="max")
