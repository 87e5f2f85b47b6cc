import pytest
import torch

from medtrans.losses import AdversarialLoss
from medtrans.networks import (
    MultiResolutionDiscriminator,
    discriminator_features,
    discriminator_logits,
    min_patchgan_input_size,
    patchgan,
)


def test_patchgan_has_the_70_pixel_receptive_field():
    # instance norm couples all pixels through its statistics; eval-mode batch norm keeps the conv layout's locality
    disc = patchgan(2, channels=4, norm="batch").eval()
    x = torch.zeros(1, 1, 128, 128, requires_grad=True)
    logits = disc(x)[-1]
    logits[0, 0, logits.shape[2] // 2, logits.shape[3] // 2].backward()
    rows = torch.nonzero(x.grad[0, 0].abs().sum(1)).flatten()
    assert rows.max() - rows.min() + 1 == 70


@pytest.mark.parametrize("dims", [2, 3])
def test_patchgan_outputs_features_and_logits(dims):
    disc = patchgan(dims, channels=8)
    out = disc(torch.randn((2, 1) + (32,) * dims))
    assert len(out) == 5  # stem, 3 layers, logits
    assert out[-1].shape == (2, 1) + (2,) * dims
    assert min_patchgan_input_size(3) == 24
    disc(torch.randn((1, 1) + (24,) * dims))  # the smallest accepted patch runs


@pytest.mark.parametrize("dims", [2, 3])
def test_anti_aliased_patchgan_is_a_drop_in(dims, seeded):
    strided, blurred = patchgan(dims, channels=8), patchgan(dims, channels=8, downsample_type="blurpool")
    assert list(strided.state_dict()) == list(blurred.state_dict())
    x = torch.randn((1, 1) + (min_patchgan_input_size(3),) * dims)
    assert [f.shape for f in strided(x)] == [f.shape for f in blurred(x)]
    strides = [m.stride for m in blurred.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Conv3d))]
    assert all(s == (1,) * dims for s in strides)
    with pytest.raises(ValueError, match="downsample_type"):
        patchgan(dims, downsample_type="maxpool")


@pytest.mark.parametrize("dims", [2, 3])
def test_multi_resolution_sees_downsampled_inputs(dims, seeded):
    disc = MultiResolutionDiscriminator(dims, num_scales=2, channels=4, num_layers=2)
    size = disc.min_input_size
    assert size == 24
    x = torch.randn((1, 1) + (32,) * dims, requires_grad=True)
    out = disc(x)
    logits = discriminator_logits(out)
    assert [tuple(t.shape[2:]) for t in logits] == [(6,) * dims, (2,) * dims]
    assert len(discriminator_features(out)) == 2 * 3
    loss = AdversarialLoss("bce")(logits, target_is_real=True, for_discriminator=False)
    loss.backward()
    assert all(p.grad is not None for p in disc.parameters())
    with pytest.raises(ValueError, match="too small"):
        disc(torch.randn((1, 1) + (size - 2,) * dims))


def test_single_and_multi_scale_outputs_share_one_interface():
    single = patchgan(2, channels=4)(torch.randn(1, 1, 32, 32))
    assert len(discriminator_logits(single)) == 1
    assert discriminator_logits(single)[0] is single[-1]
    assert discriminator_features(single) == single[:-1]


@pytest.mark.parametrize("dims", [2, 3])
def test_spectral_norm_bounds_every_convolution(dims, seeded):
    disc = MultiResolutionDiscriminator(dims, num_scales=2, channels=4, num_layers=2, spectral_norm=True)
    convs = [m for m in disc.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Conv3d))]
    assert convs and all(torch.nn.utils.parametrize.is_parametrized(m, "weight") for m in convs)
    x = torch.randn((1, 1) + (32,) * dims)
    for _ in range(20):  # the power iteration converges while training
        disc(x)
    for conv in convs:
        sigma = torch.linalg.matrix_norm(conv.weight.detach().flatten(1), ord=2)
        assert sigma == pytest.approx(1.0, abs=0.05)
    assert [t.shape for t in discriminator_logits(disc(x))] == [t.shape for t in discriminator_logits(
        MultiResolutionDiscriminator(dims, num_scales=2, channels=4, num_layers=2)(x))]
