"""Small N-D building blocks shared by the generators (built through MONAI's layer factories)."""

from __future__ import annotations

import torch
from monai.networks.layers.factories import Act, Conv, Norm, Pad
from torch import nn

__all__ = ["PAD_TYPES", "UPSAMPLE_TYPES", "ConvBlock", "ResidualBlock", "UpsampleBlock", "reflection_pad_factory"]

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


UPSAMPLE_TYPES = ("transpose", "resize")


class UpsampleBlock(nn.Sequential):
    """Doubles the spatial size: transposed convolution, or nearest resize then convolution.

    The resize-convolution avoids the checkerboard artefacts of transposed convolutions (Odena et al., Distill 2016).

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels.
        upsample_type: ``"transpose"`` or ``"resize"``.
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
        if upsample_type == "transpose":
            conv_t = Conv[Conv.CONVTRANS, spatial_dims]
            self.up = conv_t(in_channels, out_channels, 3, stride=2, padding=1, output_padding=1)
            if norm is not None:
                self.norm = _norm_layer(norm, spatial_dims, out_channels)
            self.act = nn.ReLU()
        else:
            self.up = nn.Upsample(scale_factor=2, mode="nearest")
            self.conv = ConvBlock(spatial_dims, in_channels, out_channels, 3, 1, pad_type, norm, "relu")
