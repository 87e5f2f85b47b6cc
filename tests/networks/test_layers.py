import pytest
import torch
from monai.networks.layers.factories import Pad

from medtrans.networks.layers import ConvBlock, UpsampleBlock


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


@pytest.mark.parametrize("upsample_type", ["transpose", "resize"])
def test_upsample_doubles_size(upsample_type):
    assert UpsampleBlock(2, 4, 2, upsample_type)(torch.randn(1, 4, 5, 6)).shape == (1, 2, 10, 12)
