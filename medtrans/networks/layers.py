"""Small N-D building blocks shared by the generators (built through MONAI's layer factories)."""

from __future__ import annotations

import torch
from monai.networks.blocks import SubpixelUpsample
from monai.networks.layers.factories import Act, Conv, Norm, Pad
from monai.networks.utils import icnr_init
from torch import nn

__all__ = [
    "PAD_TYPES",
    "UPSAMPLE_TYPES",
    "ConvBlock",
    "ResidualBlock",
    "UpsampleBlock",
    "reflection_pad_factory",
    "reinit_subpixel",
    "subpixel_upsample",
]

PAD_TYPES = ("reflect", "replicate", "zeros")


def reflection_pad_factory(dim: int) -> type[nn.ReflectionPad1d | nn.ReflectionPad2d | nn.ReflectionPad3d]:
    """Reflection padding layer for ``dim`` spatial dimensions (MONAI's Pad factory has no reflection pad).

    Args:
        dim: number of spatial dimensions (1, 2 or 3).

    Returns:
        the ``nn.ReflectionPad{dim}d`` class.
    """
    return (nn.ReflectionPad1d, nn.ReflectionPad2d, nn.ReflectionPad3d)[dim - 1]


if "REFLECTIONPAD" not in Pad.names:
    Pad.add_factory_callable("reflectionpad", reflection_pad_factory)


def _pad_layer(pad_type: str, spatial_dims: int, amount: int) -> nn.Module:
    if pad_type not in PAD_TYPES:
        raise ValueError(f"pad_type must be one of {PAD_TYPES}, got {pad_type!r}")
    if amount == 0 or pad_type == "zeros":
        return nn.Identity()
    factory = Pad["reflectionpad" if pad_type == "reflect" else Pad.REPLICATIONPAD, spatial_dims]
    return factory(amount)


class ConvBlock(nn.Sequential):
    """Explicit padding, convolution, optional instance/batch norm and activation.

    Explicit padding lets the CycleGAN-family generators use reflection padding in 2D and 3D.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: odd kernel size.
        stride: convolution stride.
        pad_type: ``"reflect"``, ``"replicate"`` or ``"zeros"``.
        norm: MONAI norm name (e.g. ``"instance"``, ``"batch"``) or ``None``.
        act: MONAI activation name/tuple or ``None``.
        bias: convolution bias.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        pad_type: str = "reflect",
        norm: str | tuple | None = "instance",
        act: str | tuple | None = "relu",
        bias: bool = True,
    ) -> None:
        super().__init__()
        pad = (kernel_size - 1) // 2
        self.pad = _pad_layer(pad_type, spatial_dims, pad)
        conv_type = Conv[Conv.CONV, spatial_dims]
        self.conv = conv_type(
            in_channels, out_channels, kernel_size, stride=stride, padding=pad if pad_type == "zeros" else 0, bias=bias
        )
        if norm is not None:
            self.norm = _norm_layer(norm, spatial_dims, out_channels)
        if act is not None:
            self.act = _act_layer(act)


def _norm_layer(norm: str | tuple, spatial_dims: int, channels: int) -> nn.Module:
    name, args = (norm, {}) if isinstance(norm, str) else norm
    args = dict(args)
    if name.lower() == "instance":
        args.setdefault("affine", False)  # CycleGAN/CUT: InstanceNorm without affine parameters
    return Norm[name, spatial_dims](channels, **args)


def _act_layer(act: str | tuple) -> nn.Module:
    name, args = (act, {}) if isinstance(act, str) else act
    return Act[name](**args)


class ResidualBlock(nn.Module):
    """Johnson/CycleGAN residual block: ``x + conv-norm-act-conv-norm(x)``, shape preserving.

    Args:
        spatial_dims: 2 or 3.
        channels: channels in and out.
        pad_type: padding type of both convolutions.
        norm: normalisation of both convolutions.
        dropout: dropout probability between the two convolutions.
    """

    def __init__(
        self,
        spatial_dims: int,
        channels: int,
        pad_type: str = "reflect",
        norm: str | tuple | None = "instance",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [ConvBlock(spatial_dims, channels, channels, 3, 1, pad_type, norm, "relu")]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        layers.append(ConvBlock(spatial_dims, channels, channels, 3, 1, pad_type, norm, None))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


UPSAMPLE_TYPES = ("transpose", "resize", "pixelshuffle")


def subpixel_upsample(spatial_dims: int, in_channels: int, out_channels: int, scale_factor: int = 2) -> SubpixelUpsample:
    """MONAI's sub-pixel convolution (Shi et al., CVPR 2016) with ICNR initialisation (Aitken et al., 2017).

    A 3-wide convolution makes ``scale_factor ** spatial_dims`` output channels per channel, which the pixel shuffle
    spreads over the finer grid. ICNR gives every sub-voxel position the same kernel and the bias starts at 0, so at
    initialisation the layer is a convolution followed by nearest-neighbour resizing: no checkerboard, and no shift.
    Training is free to untie the kernels, and adversarial training can teach it a grid (docs/benchmarks.md).
    Aitken et al.'s pad-and-average blur is left out: it moves each upsampled map by half of a fine voxel, which in a
    U-Net displaces the decoder against the skip connections. :func:`medtrans.methods.base.init_weights` keeps ICNR
    whatever ``init_type`` draws the kernel.
    """
    up = SubpixelUpsample(spatial_dims, in_channels, out_channels, scale_factor, apply_pad_pool=False)
    nn.init.zeros_(up.conv_block.bias)
    return up


def reinit_subpixel(network: nn.Module, init) -> None:
    """Redraw the kernel of every :class:`SubpixelUpsample` of ``network`` with ``init``, ICNR-tied, and zero its bias."""
    for module in network.modules():
        if isinstance(module, SubpixelUpsample) and isinstance(module.conv_block, nn.modules.conv._ConvNd):
            icnr_init(module.conv_block, module.scale_factor, init=init)
            if module.conv_block.bias is not None:
                nn.init.zeros_(module.conv_block.bias)


class UpsampleBlock(nn.Sequential):
    """Doubles the spatial size: transposed convolution, nearest resize then convolution, or sub-pixel convolution.

    The resize-convolution avoids the checkerboard artefacts of transposed convolutions (Odena et al., Distill 2016);
    the ICNR-initialised sub-pixel convolution (see :func:`subpixel_upsample`) starts without them.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels.
        upsample_type: ``"transpose"``, ``"resize"`` or ``"pixelshuffle"``.
        pad_type: padding of the resize-convolution.
        norm: normalisation after the convolution.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        upsample_type: str = "transpose",
        pad_type: str = "reflect",
        norm: str | tuple | None = "instance",
    ) -> None:
        super().__init__()
        if upsample_type not in UPSAMPLE_TYPES:
            raise ValueError(f"upsample_type must be one of {UPSAMPLE_TYPES}, got {upsample_type!r}")
        if upsample_type == "resize":
            self.up = nn.Upsample(scale_factor=2, mode="nearest")
            self.conv = ConvBlock(spatial_dims, in_channels, out_channels, 3, 1, pad_type, norm, "relu")
            return
        if upsample_type == "transpose":
            conv_t = Conv[Conv.CONVTRANS, spatial_dims]
            self.up = conv_t(in_channels, out_channels, 3, stride=2, padding=1, output_padding=1)
        else:
            self.up = subpixel_upsample(spatial_dims, in_channels, out_channels)
        if norm is not None:
            self.norm = _norm_layer(norm, spatial_dims, out_channels)
        self.act = nn.ReLU()
