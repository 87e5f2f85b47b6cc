"""Dimension-agnostic networks (``spatial_dims`` 2 or 3) built through MONAI's layer factories."""

from medtrans.networks.discriminators import (
    MultiResolutionDiscriminator,
    PatchDiscriminator,
    discriminator_features,
    discriminator_logits,
    min_patchgan_input_size,
    patchgan,
)
from medtrans.networks.features import (
    ConvFeatures,
    DiscriminatorFeatures,
    FeatureExtractor,
    HookFeatures,
    PretrainedFeatures,
    PretrainedWeightsUnavailableError,
)
from medtrans.networks.generators import ResnetGenerator, UNetGenerator
from medtrans.networks.heads import PatchSampleMLP
from medtrans.networks.pool import ImagePool
from medtrans.networks.unit import UNIT, GaussianMixturePrior, UNITDecoder, UNITEncoder

__all__ = [
    "UNIT",
    "ConvFeatures",
    "DiscriminatorFeatures",
    "FeatureExtractor",
    "GaussianMixturePrior",
    "HookFeatures",
    "ImagePool",
    "MultiResolutionDiscriminator",
    "PatchDiscriminator",
    "PatchSampleMLP",
    "PretrainedFeatures",
    "PretrainedWeightsUnavailableError",
    "ResnetGenerator",
    "UNITDecoder",
    "UNITEncoder",
    "UNetGenerator",
    "discriminator_features",
    "discriminator_logits",
    "min_patchgan_input_size",
    "patchgan",
]
