"""Small N-D building blocks shared by the generators (built through MONAI's layer factories)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.networks.blocks import SubpixelUpsample
from monai.networks.layers.factories import Act, Conv, Norm, Pad
from monai.networks.utils import icnr_init
from torch import nn

__all__ = [
    "DOWNSAMPLE_TYPES",
    "PAD_TYPES",
    "UPSAMPLE_TYPES",
    "BlurPool",
    "ConvBlock",
    "DownsampleBlock",
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


UPSAMPLE_TYPES = ("transpose", "resize", "linear", "pixelshuffle", "transpose_blur")
DOWNSAMPLE_TYPES = ("stride", "blurpool")


class BlurPool(nn.Module):
    """Anti-aliased downsampling (Zhang, ICML 2019): a binomial ``[1, 2, 1]`` low-pass per channel, then stride 2.

    The low-pass has no gain at the 2-voxel period along any axis; with ``stride=1`` it is that blur alone, which
    removes the checkerboard a transposed convolution prints (the ``"transpose_blur"`` upsampling).

    With reflection padding of 1 the output side is ``ceil(n / 2)``, as for a stride-2 convolution of kernel 3 and
    padding 1, and ``floor(n / 2)`` after a kernel-4 stride-1 convolution, as for a kernel-4 stride-2 one: a strided
    convolution becomes ``stride-1 convolution → BlurPool`` without changing any shape. The kernel is a fixed,
    non-persistent buffer, so checkpoints hold no extra entry.

    Args:
        spatial_dims: 2 or 3.
        channels: channels in and out (filtered separately).
        stride: 2 (downsampling) or 1 (blur only, same size).
    """

    def __init__(self, spatial_dims: int, channels: int, stride: int = 2) -> None:
        super().__init__()
        taps = torch.tensor([1.0, 2.0, 1.0])
        kernel = taps
        for _ in range(spatial_dims - 1):
            kernel = kernel.unsqueeze(-1) * taps
        kernel = kernel / kernel.sum()
        self.register_buffer("kernel", kernel.expand(channels, 1, *kernel.shape).clone(), persistent=False)
        self.pad = _pad_layer("reflect", spatial_dims, 1)
        self.conv = (F.conv1d, F.conv2d, F.conv3d)[spatial_dims - 1]
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.pad(x), self.kernel.to(x.dtype), stride=self.stride, groups=x.shape[1])


class DownsampleBlock(ConvBlock):
    """Halves the spatial size: a stride-2 convolution block, or a stride-1 one followed by :class:`BlurPool`.

    ``"blurpool"`` is the anti-aliased downsampling of the CUT repository's generators (its default); it costs the
    convolution at the finer resolution. Both keep :class:`ConvBlock`'s parameter names.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels.
        downsample_type: ``"stride"`` or ``"blurpool"``.
        pad_type: padding of the convolution.
        norm: normalisation after the convolution.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        downsample_type: str = "stride",
        pad_type: str = "reflect",
        norm: str | tuple | None = "instance",
    ) -> None:
        if downsample_type not in DOWNSAMPLE_TYPES:
            raise ValueError(f"downsample_type must be one of {DOWNSAMPLE_TYPES}, got {downsample_type!r}")
        stride = 2 if downsample_type == "stride" else 1
        super().__init__(spatial_dims, in_channels, out_channels, 3, stride, pad_type, norm, "relu")
        if downsample_type == "blurpool":
            self.blur = BlurPool(spatial_dims, out_channels)


def resize_mode(upsample_type: str, spatial_dims: int) -> str:
    """``nn.Upsample`` mode of a resize upsampling: nearest for ``"resize"``, (bi/tri)linear for ``"linear"``."""
    return "nearest" if upsample_type == "resize" else ("linear", "bilinear", "trilinear")[spatial_dims - 1]


def subpixel_upsample(spatial_dims: int, in_channels: int, out_channels: int, scale_factor: int = 2) -> SubpixelUpsample:
    """MONAI's sub-pixel convolution (Shi et al., CVPR 2016) with ICNR initialisation (Aitken et al., 2017).

    A 3-wide convolution makes ``scale_factor ** spatial_dims`` output channels per channel, which the pixel shuffle
    spreads over the finer grid. ICNR gives every sub-voxel position the same kernel and the bias starts at 0, so at
    initialisation the layer is a convolution followed by nearest-neighbour resizing: no checkerboard, and no shift.
    Training is free to untie the kernels, and adversarial training can teach it a grid (docs/notes.md, "What did not
    help").
    Aitken et al.'s pad-and-average blur is left out: it moves each upsampled map by half of a fine voxel, which in a
    U-Net displaces the decoder against the skip connections. :func:`medtrans.networks.init.init_weights` keeps ICNR
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
    """Doubles the spatial size: transposed convolution (optionally blurred), resize then convolution, or sub-pixel
    convolution.

    The resize-convolution avoids the checkerboard artefacts of transposed convolutions (Odena et al., Distill 2016);
    the ICNR-initialised sub-pixel convolution (see :func:`subpixel_upsample`) starts without them. ``"linear"``
    resizes by (bi/tri)linear interpolation (``align_corners=False``), which is what the CUT repository's anti-aliased
    upsampling (a ``[1, 3, 3, 1]`` filter on the zero-inserted map, replicated borders) computes.
    ``"transpose_blur"`` follows the transposed convolution with a fixed ``[1, 2, 1]`` blur (:class:`BlurPool` at
    stride 1), as StyleGAN2 blurs its transposed convolutions: the blur has no gain at the 2-voxel period, so no
    checkerboard passes, whatever the learned kernel.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels.
        upsample_type: ``"transpose"``, ``"transpose_blur"``, ``"resize"`` (nearest), ``"linear"`` or
            ``"pixelshuffle"``.
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
        if upsample_type in ("resize", "linear"):
            self.up = nn.Upsample(scale_factor=2, mode=resize_mode(upsample_type, spatial_dims))
            self.conv = ConvBlock(spatial_dims, in_channels, out_channels, 3, 1, pad_type, norm, "relu")
            return
        if upsample_type in ("transpose", "transpose_blur"):
            conv_t = Conv[Conv.CONVTRANS, spatial_dims]
            self.up = conv_t(in_channels, out_channels, 3, stride=2, padding=1, output_padding=1)
            if upsample_type == "transpose_blur":
                self.blur = BlurPool(spatial_dims, out_channels, stride=1)
        else:
            self.up = subpixel_upsample(spatial_dims, in_channels, out_channels)
        if norm is not None:
            self.norm = _norm_layer(norm, spatial_dims, out_channels)
        self.act = nn.ReLU()
