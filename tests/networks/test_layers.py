import pytest
import torch
from monai.networks.layers.factories import Pad

from medtrans.networks.init import INIT_TYPES, init_weights
from medtrans.networks.layers import BlurPool, ConvBlock, DownsampleBlock, UpsampleBlock
from tests.conftest import checkerboard_pattern


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_reflection_pad_is_registered_in_monai_factory(dims):
    pad = Pad["reflectionpad", dims](2)
    x = torch.randn((1, 1) + (5,) * dims)
    y = pad(x)
    assert y.shape == (1, 1) + (9,) * dims
    inner = (slice(None), slice(None)) + (slice(2, 7),) * (dims - 1)
    assert torch.equal(y[inner + (0,)], x[(Ellipsis, 2)])  # reflected about the border, not zero-filled


@pytest.mark.parametrize("pad_type", ["reflect", "replicate", "zeros"])
def test_conv_block_keeps_shape_for_every_padding(pad_type):
    block = ConvBlock(3, 2, 4, kernel_size=7, pad_type=pad_type)
    assert block(torch.randn(1, 2, 9, 8, 10)).shape == (1, 4, 9, 8, 10)


@pytest.mark.parametrize("upsample_type", ["transpose", "resize", "linear", "pixelshuffle"])
def test_upsample_doubles_size(upsample_type):
    assert UpsampleBlock(2, 4, 2, upsample_type)(torch.randn(1, 4, 5, 6)).shape == (1, 2, 10, 12)


def test_linear_upsampling_is_the_cut_repository_up_filter():
    """[1, 3, 3, 1] on the zero-inserted map with replicated borders, written out along one axis, is what
    ``upsample_type="linear"`` resizes with: 3/4 of the nearer and 1/4 of the farther coarse voxel."""
    x = torch.randn(1, 1, 7)
    padded = torch.cat([x[..., :1], x, x[..., -1:]], dim=-1)
    expected = torch.stack([0.25 * padded[..., :-2] + 0.75 * x, 0.75 * x + 0.25 * padded[..., 2:]], dim=-1).flatten(-2)
    up = UpsampleBlock(1, 1, 1, "linear", norm=None).up
    assert torch.allclose(up(x), expected, atol=1e-6)


@pytest.mark.parametrize("dims", [2, 3])
def test_blurpool_removes_the_aliasing_of_a_strided_sampling(dims):
    """A strided sampling folds the finest (2-voxel) pattern into a constant; the low-pass first removes it, keeps a
    constant, and halves odd and even sides as a stride-2 convolution does."""
    checker = checkerboard_pattern((1, 3) + (8,) * dims)
    assert torch.equal(checker[(Ellipsis,) + (slice(None, None, 2),) * dims], torch.ones((1, 3) + (4,) * dims))
    blur = BlurPool(dims, 3)
    assert blur(checker).abs().max() < 1e-6
    assert torch.allclose(blur(torch.full((1, 3) + (8,) * dims, 0.7)), torch.full((1, 3) + (4,) * dims, 0.7))
    for side in (7, 8):
        shape = (1, 3) + (side,) * dims
        assert blur(torch.randn(shape)).shape == DownsampleBlock(dims, 3, 3, "stride")(torch.randn(shape)).shape
    with pytest.raises(ValueError, match="downsample_type"):
        DownsampleBlock(dims, 3, 3, "maxpool")


def _constant_on_2_voxel_blocks(y: torch.Tensor, dims: int) -> bool:
    """Whether every 2-voxel block of the (1, 3, 12, ...) output ``y`` holds one value (a nearest-neighbour resize)."""
    blocks = y.reshape((1, 3) + (6, 2) * dims)
    first = blocks[(slice(None), slice(None)) + (slice(None), slice(0, 1)) * dims]
    return torch.equal(blocks, first.expand_as(blocks))


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("init_type", INIT_TYPES)
def test_subpixel_upsampling_starts_as_nearest_resize_under_every_init(dims, init_type, seeded):
    """ICNR: at initialisation every 2-voxel block of the sub-pixel convolution's output holds one value (no
    checkerboard, no shift), whichever init draws the kernel; an untied kernel would make the blocks vary."""
    up = init_weights(UpsampleBlock(dims, 4, 3, "pixelshuffle", norm=None), init_type).up
    with torch.no_grad():
        y = up(torch.randn((1, 4) + (6,) * dims))
    assert y.std() > 0
    assert _constant_on_2_voxel_blocks(y, dims)
    with torch.no_grad():
        up.conv_block.weight.add_(torch.randn_like(up.conv_block.weight))  # what training may do: the tie is not forced
        y = up(torch.randn((1, 4) + (6,) * dims))
    assert not _constant_on_2_voxel_blocks(y, dims)
