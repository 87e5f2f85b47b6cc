"""N-D losses for image translation, each usable alone and combinable with any method.

Adversarial terms use :class:`AdversarialLoss` (least squares, bce, hinge; MONAI's ``PatchAdversarialLoss`` values,
computed from logits so that they are safe under CUDA autocast); it averages over a list of logit maps, so pass
:func:`medtrans.networks.discriminator_logits` of a (multi-scale) discriminator output.
"""

from medtrans.losses.adversarial import ADVERSARIAL_CRITERIA, AdversarialLoss
from medtrans.losses.cycle import CyclePerceptualLoss, CycleStyleLoss, gram_matrix
from medtrans.losses.kl import GaussianKLLoss, GaussianMixtureKLLoss
from medtrans.losses.lncc import LNCCLoss
from medtrans.losses.mutual_information import MutualInformationLoss
from medtrans.losses.ngf import NGFLoss, normalized_gradient_field, spatial_gradient
from medtrans.losses.patchnce import PatchNCELoss
from medtrans.losses.polarity import POLARITY_TYPES, PolarityLoss, invert_foreground
from medtrans.losses.selfsim import SpatialCorrelativeLoss, patch_self_similarity

__all__ = [
    "ADVERSARIAL_CRITERIA",
    "AdversarialLoss",
    "CyclePerceptualLoss",
    "CycleStyleLoss",
    "GaussianKLLoss",
    "GaussianMixtureKLLoss",
    "LNCCLoss",
    "MutualInformationLoss",
    "NGFLoss",
    "POLARITY_TYPES",
    "PatchNCELoss",
    "PolarityLoss",
    "SpatialCorrelativeLoss",
    "gram_matrix",
    "invert_foreground",
    "normalized_gradient_field",
    "patch_self_similarity",
    "spatial_gradient",
]
