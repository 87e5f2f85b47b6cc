"""The discriminator remedies: differentiable augmentation, the R1 penalty, instance noise."""

import pytest
import torch

from medtrans.losses.discriminator import diff_augment, instance_noise, r1_penalty
from medtrans.methods import build_method


@pytest.mark.parametrize("shape", [(3, 1, 16, 16), (2, 1, 8, 8, 8)])
def test_diff_augment_keeps_the_shape_moves_the_content_and_passes_gradients(shape):
    torch.manual_seed(0)
    x = torch.randn(shape, requires_grad=True)
    shifted = diff_augment(x, ["translation"])
    assert shifted.shape == x.shape and not torch.equal(shifted, x)
    cut = diff_augment(x, ["cutout"])
    assert all((c == 0).any() for c in cut)  # every sample has its box
    (shifted.sum() + cut.sum()).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="unknown augmentation 'colour'"):
        diff_augment(x, ["colour"])


def test_r1_penalty_of_a_linear_discriminator_is_its_weight_norm():
    w = torch.randn(1, 1, 4, 4)
    penalty = r1_penalty(lambda x: [(x * w).sum((1, 2, 3))], torch.randn(5, 1, 4, 4))
    assert torch.isclose(penalty, w.pow(2).sum())


def test_instance_noise_anneals_to_zero():
    x = torch.zeros(1000)
    assert instance_noise(x, 0.1, 0, 100).std() == pytest.approx(0.1, rel=0.15)
    assert instance_noise(x, 0.1, 50, 100).std() == pytest.approx(0.05, rel=0.15)
    assert torch.equal(instance_noise(x, 0.1, 100, 100), x)


def test_a_method_trains_with_every_remedy_and_refuses_bad_values():
    tiny = {"generator": {"channels": [4, 8], "strides": [2]},
            "discriminator": {"channels": 4, "num_layers": 2, "num_scales": 1}}
    torch.manual_seed(0)
    method = build_method("nec", spatial_dims=2, d_augment=["translation", "cutout"], r1_gamma=1.0,
                          instance_noise=0.1, start="none", **tiny).setup("cpu", iterations=4)
    for _ in range(2):
        losses = method.training_step({"a": torch.rand(2, 1, 32, 32) * 2 - 1, "b": torch.rand(2, 1, 32, 32) * 2 - 1})
    assert all(torch.isfinite(torch.as_tensor(v)) for v in losses.values())
    for bad, message in [({"d_augment": ["colour"]}, "d_augment"), ({"r1_gamma": -1.0}, "r1_gamma"),
                         ({"instance_noise": float("nan")}, "instance_noise")]:
        with pytest.raises(ValueError, match=message):
            build_method("nec", spatial_dims=2, **bad, **tiny)
