import pytest
import torch

from medtrans.metrics import checkerboard
from medtrans.networks import ResnetGenerator, UNetGenerator


def _all_parameters_receive_gradient(net: torch.nn.Module, x: torch.Tensor) -> None:
    net(x).square().mean().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert not missing, f"no gradient for {missing}"


@pytest.mark.parametrize("dims,shape", [(2, (2, 1, 32, 24)), (3, (1, 1, 16, 12, 20))])
@pytest.mark.parametrize("upsample_type", ["transpose", "resize", "linear", "pixelshuffle", "transpose_blur"])
def test_resnet_generator_shape_range_and_gradients(dims, shape, upsample_type, seeded):
    net = ResnetGenerator(dims, 1, 1, channels=8, num_res_blocks=2, upsample_type=upsample_type)
    x = torch.randn(shape)
    y = net(x)
    assert y.shape == x.shape
    assert y.abs().max() <= 1.0  # tanh output
    _all_parameters_receive_gradient(net, x)


@pytest.mark.parametrize("dims,shape", [(2, (2, 1, 32, 24)), (3, (1, 1, 16, 12, 20))])
def test_anti_aliased_resnet_generator_is_a_drop_in(dims, shape, seeded):
    """The CUT repository's anti-aliased downsampling keeps every shape, feature and parameter name of the strided."""
    strided = ResnetGenerator(dims, channels=8, num_res_blocks=2, upsample_type="linear")
    blurred = ResnetGenerator(dims, channels=8, num_res_blocks=2, downsample_type="blurpool", upsample_type="linear")
    x = torch.randn(shape)
    assert list(strided.state_dict()) == list(blurred.state_dict())
    ids = range(strided.num_encoder_features)
    assert [f.shape for f in strided.encode(x, ids)] == [f.shape for f in blurred.encode(x, ids)]
    assert blurred(x).shape == x.shape
    _all_parameters_receive_gradient(blurred, x)


def test_resnet_generator_channels_and_reference_layout():
    net = ResnetGenerator(2, in_channels=2, out_channels=3)  # defaults: 64 wide, 9 blocks (CycleGAN 256²)
    assert net(torch.randn(1, 2, 64, 64)).shape == (1, 3, 64, 64)
    assert net.feature_channels == [2, 64, 128, 256] + [256] * 9
    assert sum(p.numel() for p in net.parameters()) == pytest.approx(11.38e6, rel=0.01)  # CycleGAN's 11.378 M


def test_resnet_generator_encode_returns_requested_features(seeded):
    net = ResnetGenerator(3, channels=8, num_res_blocks=4)
    x = torch.randn(1, 1, 16, 16, 16)
    feats = net.encode(x, net.default_nce_layers)
    assert net.default_nce_layers == (0, 1, 2, 3, 5)
    assert [tuple(f.shape[1:]) for f in feats] == [(1, 16, 16, 16), (8, 16, 16, 16), (16, 8, 8, 8), (32, 4, 4, 4), (32, 4, 4, 4)]
    assert feats[0] is x
    with pytest.raises(ValueError, match="layer_ids"):
        net.encode(x, [net.num_encoder_features])


def test_resnet_generator_rejects_indivisible_shape():
    with pytest.raises(ValueError, match="divisible by 4"):
        ResnetGenerator(2, channels=4, num_res_blocks=1)(torch.randn(1, 1, 30, 32))
    with pytest.raises(ValueError, match="pad_type"):
        ResnetGenerator(2, pad_type="circular")


@pytest.mark.parametrize("upsample_type", ["resize", "linear", "pixelshuffle", "transpose", "transpose_blur"])
@pytest.mark.parametrize("dims,shape", [(2, (2, 1, 32, 32)), (3, (1, 1, 16, 16, 16))])
def test_unet_generator_shape_and_gradients(dims, shape, upsample_type, seeded):
    net = UNetGenerator(dims, channels=(8, 16, 32), strides=(2, 2), upsample_type=upsample_type)
    x = torch.randn(shape)
    y = net(x)
    assert y.shape == x.shape and y.abs().max() <= 1.0
    _all_parameters_receive_gradient(net, x)
    with pytest.raises(ValueError, match="divisible by 4"):
        net(torch.randn((1, 1) + (18,) * dims))


@pytest.mark.parametrize("upsample_type", [None, "pixelshuffle", "transpose_blur", "transpose"])
def test_trained_unet_prints_no_checkerboard_by_default(upsample_type, each_t1_t2):
    """A tiny U-Net fitted T1 → T2 (synthetic brains, and real MRI where it is): with the default upsampling, ICNR
    sub-pixel convolutions or blurred transposed convolutions, its output has no more energy at the 2-voxel period than
    the T2 itself; with transposed convolutions (the reference layout) it has several times more (measured: 0.17-0.28
    against 18.6 on the synthetic pair, 0.12-0.19 against 9.5 on lesjak)."""
    t1, t2 = each_t1_t2[1]
    torch.manual_seed(0)
    options = {} if upsample_type is None else {"upsample_type": upsample_type}
    net = UNetGenerator(3, channels=(8, 16, 32), strides=(2, 2), **options)  # PyTorch's init, as NEC and pix2pix use
    optimizer = torch.optim.Adam(net.parameters(), 2e-3, betas=(0.5, 0.999))
    for _ in range(40):
        optimizer.zero_grad()
        (net(t1) - t2).abs().mean().backward()
        optimizer.step()
    with torch.no_grad():
        score = checkerboard(net(t1)[0, 0].numpy(), t2[0, 0].numpy())
    if upsample_type != "transpose":
        assert score < 1, f"checkerboard {score:.2f} with {upsample_type or 'the default'} upsampling"
    else:
        assert score > 2, f"checkerboard {score:.2f}: the measure misses a transposed convolution's grid"


@pytest.mark.parametrize("dims", [2, 3])
def test_blurred_transposed_convolution_passes_no_grid_whatever_its_weights(dims, seeded):
    """The fixed blur after each transposed convolution has no gain at the 2-voxel period: even with every learned
    weight redrawn at random, the output holds (almost) no energy there, while the plain transposed convolution's does."""
    x = torch.randn((1, 1) + (32,) * dims)
    fraction = {}
    for upsample_type in ("transpose", "transpose_blur"):
        torch.manual_seed(1)
        net = UNetGenerator(dims, channels=(8, 16, 32), strides=(2, 2), norm=None, upsample_type=upsample_type)
        with torch.no_grad():
            for p in net.parameters():
                p.normal_(0, 0.3)
            energy = torch.fft.fftn(net(x)[0, 0]).abs().square()
        nyquist = sum(energy.select(axis, 16).sum() for axis in range(dims))  # the 2-voxel period along any axis
        fraction[upsample_type] = float(nyquist / energy.sum())
    assert fraction["transpose"] > 0.1 and fraction["transpose_blur"] < 0.01, fraction
