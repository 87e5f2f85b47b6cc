"""Patch discriminators: MONAI's PatchDiscriminator and a pix2pixHD multi-resolution wrapper around it."""

from __future__ import annotations

import torch
from monai.networks.layers.factories import Pool
from monai.networks.nets import PatchDiscriminator
from torch import nn

from medtrans.defaults import DISCRIMINATOR_LAYERS, min_patchgan_input_size
from medtrans.networks.layers import DOWNSAMPLE_TYPES, BlurPool

__all__ = [
    "MultiResolutionDiscriminator",
    "PatchDiscriminator",
    "discriminator_features",
    "discriminator_logits",
    "min_patchgan_input_size",
    "patchgan",
]


def patchgan(
    spatial_dims: int,
    in_channels: int = 1,
    channels: int = 64,
    num_layers: int = DISCRIMINATOR_LAYERS,
    norm: str | tuple = "instance",
    spectral_norm: bool = False,
    downsample_type: str = "stride",
) -> PatchDiscriminator:
    """The pix2pix/CycleGAN PatchGAN (70×70 receptive field in 2D for ``num_layers=3``) as a MONAI PatchDiscriminator.

    MONAI's layout (a stride-2 stem without norm, ``num_layers - 1`` stride-2 and one stride-1 normalised layers, a
    final 4-wide convolution) equals the reference ``NLayerDiscriminator``; instance norm and biased convolutions are
    the CycleGAN/CUT choice, and weights start from N(0, 0.02) as there.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels (2 for pix2pix's conditional discriminator: source and target concatenated).
        channels: width of the first layer (doubled per layer).
        num_layers: normalised layers after the stem.
        norm: MONAI norm name.
        spectral_norm: spectral normalisation of every convolution (Miyato et al., ICLR 2018): a Lipschitz bound on
            the discriminator that steadies GAN training.
        downsample_type: ``"stride"`` (stride-2 convolutions) or ``"blurpool"`` (each becomes a stride-1 convolution
            block followed by :class:`~medtrans.networks.layers.BlurPool`, the CUT repository's anti-aliased
            discriminator; same output shapes, same parameter names).

    Returns:
        a :class:`monai.networks.nets.PatchDiscriminator` whose forward returns its intermediate features with the
        logits last.

    Raises:
        ValueError: on an unknown ``downsample_type``.
    """
    if downsample_type not in DOWNSAMPLE_TYPES:
        raise ValueError(f"downsample_type must be one of {DOWNSAMPLE_TYPES}, got {downsample_type!r}")
    network = PatchDiscriminator(
        spatial_dims=spatial_dims,
        channels=channels,
        in_channels=in_channels,
        num_layers_d=num_layers,
        kernel_size=4,
        norm=norm,
        bias=True,
        padding=1,
    )
    if downsample_type == "blurpool":
        for block in network.children():
            if block.conv.stride[0] == 2:  # blurred after the block's activation, as in the CUT repository
                block.conv.stride = (1,) * spatial_dims
                block.add_module("blur", BlurPool(spatial_dims, block.conv.out_channels))
    if spectral_norm:
        for module in list(network.modules()):
            if isinstance(module, (nn.Conv2d, nn.Conv3d)):
                nn.utils.parametrizations.spectral_norm(module)
    return network


class MultiResolutionDiscriminator(nn.Module):
    """pix2pixHD multi-scale discriminator: identical PatchGANs on the input at 1, 1/2, 1/4, ... resolution.

    MONAI's :class:`~monai.networks.nets.MultiScalePatchDiscriminator` instead feeds every sub-discriminator the same
    full-resolution input and deepens them, which collapses small 3D patches; NEC (Jaouen et al. 2024) follows
    pix2pixHD (3 layers, 3 scales), which this class reproduces with ``count_include_pad=False`` average pooling.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        num_scales: number of discriminators / resolutions.
        channels: width of each discriminator's first layer.
        num_layers: layers of each discriminator.
        norm: MONAI norm name.
        spectral_norm: spectral normalisation of every convolution (see :func:`patchgan`).
        downsample_type: ``"stride"`` or ``"blurpool"`` (see :func:`patchgan`).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int = 1,
        num_scales: int = 3,
        channels: int = 64,
        num_layers: int = DISCRIMINATOR_LAYERS,
        norm: str | tuple = "instance",
        spectral_norm: bool = False,
        downsample_type: str = "stride",
    ) -> None:
        super().__init__()
        if num_scales < 1:
            raise ValueError(f"num_scales must be >= 1, got {num_scales}")
        self.num_scales = num_scales
        self.num_layers = num_layers
        self.discriminators = nn.ModuleList(
            patchgan(spatial_dims, in_channels, channels, num_layers, norm, spectral_norm, downsample_type)
            for _ in range(num_scales)
        )
        self.downsample = Pool[Pool.AVG, spatial_dims](kernel_size=3, stride=2, padding=1, count_include_pad=False)

    @property
    def min_input_size(self) -> int:
        """Smallest input side that every scale accepts."""
        return min_patchgan_input_size(self.num_layers) * 2 ** (self.num_scales - 1)

    def forward(self, x: torch.Tensor) -> list[list[torch.Tensor]]:
        """Run every scale.

        Args:
            x: ``(B, C, *spatial)`` with every side at least :attr:`min_input_size`.

        Returns:
            one list per scale: that discriminator's intermediate features, logits last.

        Raises:
            ValueError: if the input is too small for the coarsest scale.
        """
        if min(x.shape[2:]) < self.min_input_size:
            raise ValueError(
                f"input side {min(x.shape[2:])} is too small for {self.num_scales} scales of a {self.num_layers}-layer "
                f"PatchGAN (needs >= {self.min_input_size}); use fewer scales or layers, or larger patches"
            )
        outputs = []
        for i, disc in enumerate(self.discriminators):
            if i:
                x = self.downsample(x)
            outputs.append(disc(x))
        return outputs


def _per_scale(output: list) -> list[list[torch.Tensor]]:
    return output if isinstance(output[0], (list, tuple)) else [output]


def discriminator_logits(output: list) -> list[torch.Tensor]:
    """The logit maps of a discriminator's output, one per scale, ready for ``PatchAdversarialLoss``.

    Args:
        output: a PatchDiscriminator's list of features, or a MultiResolutionDiscriminator's list of such lists.
    """
    return [scale[-1] for scale in _per_scale(output)]


def discriminator_features(output: list) -> list[torch.Tensor]:
    """The intermediate feature maps (logits excluded) of every scale, coarse scales last."""
    return [f for scale in _per_scale(output) for f in scale[:-1]]
