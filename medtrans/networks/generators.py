"""Translation generators: the CycleGAN/Johnson ResNet generator and a U-Net generator, in 2D and 3D."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
from monai.networks.blocks import ADN, Convolution, ResidualUnit
from monai.networks.nets import UNet
from torch import nn

from medtrans.networks.layers import (
    UPSAMPLE_TYPES,
    BlurPool,
    ConvBlock,
    DownsampleBlock,
    ResidualBlock,
    UpsampleBlock,
    resize_mode,
    subpixel_upsample,
)

__all__ = ["ResnetGenerator", "UNetGenerator"]


class ResnetGenerator(nn.Module):
    """Johnson et al. (ECCV 2016) / CycleGAN generator for ``spatial_dims`` 2 or 3.

    Layout: 7-wide stem, ``num_downsamplings`` downsamplings (channels doubling), ``num_res_blocks`` residual
    blocks, as many upsamplings, a 7-wide output convolution and tanh. Padding is reflective by default and the
    normalisation is instance norm, as in the CycleGAN/CUT reference code. The output has the input's spatial shape for
    any input whose sides are divisible by ``2 ** num_downsamplings``.

    The layers are kept in one flat list so methods that need encoder features (CUT's PatchNCE, self-similarity losses)
    can read them with :meth:`encode`; feature index 0 is the input itself, 1 the stem, ``1 + i`` the ``i``-th
    downsampling, then one index per residual block.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels.
        channels: width of the stem (doubled at each downsampling).
        num_res_blocks: residual blocks at the bottleneck (9 in CycleGAN for 256² images, 6 for 128²).
        num_downsamplings: downsampling stages (2 in the reference code).
        norm: normalisation name (``"instance"``, ``"batch"``) or ``None``.
        pad_type: ``"reflect"``, ``"replicate"`` or ``"zeros"``.
        upsample_type: ``"transpose"`` (reference), ``"resize"`` (nearest resize + conv, no checkerboard),
            ``"linear"`` (linear resize + conv: the CUT repository's anti-aliased upsampling), ``"transpose_blur"``
            (transposed convolution then a fixed blur, no checkerboard) or ``"pixelshuffle"`` (ICNR-initialised
            sub-pixel convolution).
        downsample_type: ``"stride"`` (stride-2 convolutions, the original CycleGAN) or ``"blurpool"`` (stride-1
            convolution then anti-aliased downsampling, the CUT repository's default).
        dropout: dropout inside residual blocks.

    Raises:
        ValueError: on an unsupported ``spatial_dims``, ``pad_type``, ``upsample_type`` or ``downsample_type``.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int = 1,
        out_channels: int = 1,
        channels: int = 64,
        num_res_blocks: int = 9,
        num_downsamplings: int = 2,
        norm: str | tuple | None = "instance",
        pad_type: str = "reflect",
        upsample_type: str = "transpose",
        downsample_type: str = "stride",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.num_downsamplings = num_downsamplings
        self.num_res_blocks = num_res_blocks
        layers: list[nn.Module] = [ConvBlock(spatial_dims, in_channels, channels, 7, 1, pad_type, norm, "relu")]
        ch = channels
        self.feature_channels: list[int] = [in_channels, channels]  # channels at each encode() index
        for _ in range(num_downsamplings):
            layers.append(DownsampleBlock(spatial_dims, ch, ch * 2, downsample_type, pad_type, norm))
            ch *= 2
            self.feature_channels.append(ch)
        layers += [ResidualBlock(spatial_dims, ch, pad_type, norm, dropout) for _ in range(num_res_blocks)]
        self.feature_channels += [ch] * num_res_blocks
        for _ in range(num_downsamplings):
            layers.append(UpsampleBlock(spatial_dims, ch, ch // 2, upsample_type, pad_type, norm))
            ch //= 2
        layers.append(ConvBlock(spatial_dims, ch, out_channels, 7, 1, pad_type, None, "tanh"))
        self.layers = nn.ModuleList(layers)

    @property
    def size_divisor(self) -> int:
        """Every input side must be a multiple of this."""
        return 2**self.num_downsamplings

    @property
    def num_encoder_features(self) -> int:
        """Number of feature indices :meth:`encode` accepts (input, stem, downsamplings, residual blocks)."""
        return len(self.feature_channels)

    @property
    def default_nce_layers(self) -> tuple[int, ...]:
        """CUT's choice: input, stem, each downsampling and the middle residual block."""
        return (0, 1, *range(2, 2 + self.num_downsamplings), 1 + self.num_downsamplings + (self.num_res_blocks + 1) // 2)

    def encode(self, x: torch.Tensor, layer_ids: Sequence[int]) -> list[torch.Tensor]:
        """Features of the encoder at ``layer_ids`` (0 = input), computing only the layers needed.

        Args:
            x: input batch ``(B, C, *spatial)``.
            layer_ids: increasing feature indices below :attr:`num_encoder_features`.

        Returns:
            one tensor per requested index, in the order requested.

        Raises:
            ValueError: if an index is outside the encoder.
        """
        ids = list(layer_ids)
        if not ids or min(ids) < 0 or max(ids) >= self.num_encoder_features:
            raise ValueError(f"layer_ids must lie in [0, {self.num_encoder_features}), got {ids}")
        found = {0: x} if 0 in ids else {}
        h = x
        for i, layer in enumerate(self.layers[: max(ids)], start=1):
            h = layer(h)
            if i in ids:
                found[i] = h
        return [found[i] for i in ids]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if any(s % self.size_divisor for s in x.shape[2:]):
            raise ValueError(f"ResnetGenerator needs spatial sides divisible by {self.size_divisor}, got {tuple(x.shape[2:])}")
        for layer in self.layers:
            x = layer(x)
        return x


class _UpsamplingUNet(UNet):
    """MONAI's U-Net whose decoder doubles the size by nearest-neighbour (``"resize"``) or linear (``"linear"``)
    resizing and a stride-1 convolution, by an ICNR-initialised sub-pixel convolution (``"pixelshuffle"``), or by
    MONAI's transposed convolution followed by a fixed ``[1, 2, 1]`` blur (``"transpose_blur"``), instead of a
    transposed convolution alone."""

    def __init__(self, upsample_type: str, **kwargs) -> None:
        self.upsample_type = upsample_type  # read by _get_up_layer, which UNet.__init__ calls
        super().__init__(**kwargs)

    def _get_up_layer(self, in_channels: int, out_channels: int, strides: int, is_top: bool) -> nn.Module:
        conv_only = is_top and self.num_res_units == 0
        layers: list[nn.Module]
        if self.upsample_type in ("pixelshuffle", "transpose_blur"):
            if self.upsample_type == "pixelshuffle":
                layers = [subpixel_upsample(self.dimensions, in_channels, out_channels, strides)]
            else:
                layers = [Convolution(self.dimensions, in_channels, out_channels, strides=strides,
                                      kernel_size=self.up_kernel_size, bias=self.bias, conv_only=True, is_transposed=True),
                          BlurPool(self.dimensions, out_channels, stride=1)]
            if not conv_only:
                layers.append(ADN(ordering=self.adn_ordering, in_channels=out_channels, act=self.act, norm=self.norm,
                                  norm_dim=self.dimensions, dropout=self.dropout, dropout_dim=1))
        else:
            resize = nn.Upsample(scale_factor=strides, mode=resize_mode(self.upsample_type, self.dimensions))
            layers = [resize, Convolution(
                self.dimensions, in_channels, out_channels, strides=1, kernel_size=self.up_kernel_size, act=self.act,
                norm=self.norm, dropout=self.dropout, bias=self.bias, conv_only=conv_only, adn_ordering=self.adn_ordering,
            )]
        if self.num_res_units > 0:
            layers.append(ResidualUnit(
                self.dimensions, out_channels, out_channels, strides=1, kernel_size=self.kernel_size, subunits=1,
                act=self.act, norm=self.norm, dropout=self.dropout, bias=self.bias, last_conv_only=is_top,
                adn_ordering=self.adn_ordering,
            ))
        return nn.Sequential(*layers)


class UNetGenerator(nn.Module):
    """U-Net generator with a tanh output (pix2pix / NEC), built on :class:`monai.networks.nets.UNet`.

    The decoder upsamples by resize-convolution by default: a transposed convolution of stride 2 and kernel 3 covers
    the output unevenly and prints a 2-voxel checkerboard into translations (Odena et al., Distill 2016), which
    ``upsample_type="transpose"`` (MONAI's and the pix2pix reference's layout) keeps. ``"pixelshuffle"`` (sub-pixel
    convolution with ICNR initialisation, see :func:`medtrans.networks.layers.subpixel_upsample`) starts as a
    resize-convolution and can learn sub-voxel detail as a transposed convolution does, and a grid with it.
    ``"transpose_blur"`` keeps the transposed convolution and blurs its output with a fixed ``[1, 2, 1]`` low-pass,
    which has no gain at the 2-voxel period (StyleGAN2's upsampling): no grid can pass, whatever the learned kernel.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels.
        channels: channels per level (pix2pix: 64, 128, 256, 512, 512, ...).
        strides: stride of each downsampling (one fewer than ``channels``; default 2 each).
        num_res_units: residual units per level (0 gives plain conv blocks as pix2pix).
        norm: normalisation (instance by default).
        act: activation.
        dropout: dropout probability.
        upsample_type: ``"resize"`` (nearest resize + convolution, default), ``"linear"`` (linear resize +
            convolution), ``"pixelshuffle"``, ``"transpose"`` or ``"transpose_blur"``.

    Raises:
        ValueError: on an unsupported ``spatial_dims``, ``upsample_type`` or stride count.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int = 1,
        out_channels: int = 1,
        channels: Sequence[int] = (64, 128, 256, 512, 512),
        strides: Sequence[int] | None = None,
        num_res_units: int = 0,
        norm: str | tuple = "instance",
        act: str | tuple = ("leakyrelu", {"negative_slope": 0.2}),
        dropout: float = 0.0,
        upsample_type: str = "resize",
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        if upsample_type not in UPSAMPLE_TYPES:
            raise ValueError(f"upsample_type must be one of {UPSAMPLE_TYPES}, got {upsample_type!r}")
        strides = (2,) * (len(channels) - 1) if strides is None else tuple(strides)
        if len(strides) != len(channels) - 1:
            raise ValueError(f"need one stride per downsampling: {len(channels) - 1} strides, got {len(strides)}")
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.size_divisor = int(torch.prod(torch.tensor(list(strides))).item())
        unet = UNet if upsample_type == "transpose" else functools.partial(_UpsamplingUNet, upsample_type)
        self.unet = unet(
            spatial_dims=spatial_dims,
            in_channels=in_channels,
            out_channels=out_channels,
            channels=channels,
            strides=strides,
            num_res_units=num_res_units,
            norm=norm,
            act=act,
            dropout=dropout,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if any(s % self.size_divisor for s in x.shape[2:]):
            raise ValueError(f"UNetGenerator needs spatial sides divisible by {self.size_divisor}, got {tuple(x.shape[2:])}")
        return torch.tanh(self.unet(x))
