"""Every default of medtrans that more than one entry point uses, in one place.

The command line (``medtrans train`` / ``translate``), the bundles and the Python API (:class:`TrainStream`,
:class:`TranslationTrainer`, :class:`InferenceSettings`, the methods) all read their defaults — and the vocabularies of
their string options — from here, so they cannot drift apart. This module imports nothing, so the command line can
show them without loading torch. docs/architecture.md lists where each default lives.
"""

from __future__ import annotations

__all__ = [
    "ADVERSARIAL_CRITERIA",
    "AUGMENT_TRANSFORMS",
    "BATCH_SIZE",
    "BLEND_MODES",
    "CACHE_BLOCK",
    "CHECKPOINT_INTERVAL",
    "DEMO_ITERATIONS",
    "DEVICE_TYPES",
    "DISCRIMINATOR",
    "DISCRIMINATOR_LAYERS",
    "FAITHFULNESS_CALIBRATION",
    "FAITHFULNESS_EPS",
    "ITERATIONS",
    "LOG_INTERVAL",
    "MAX_VOXELS",
    "MEMORY_GB",
    "NORMALIZATIONS",
    "NUM_WORKERS",
    "OOD_FLOORS",
    "OOD_MARGIN",
    "OVERLAP",
    "PATCH_SIZE",
    "PRECISION",
    "PRECISION_TYPES",
    "RESNET_GENERATOR",
    "R1_INTERVAL",
    "ROI_SIZE",
    "SAMPLER_TYPE",
    "SAMPLER_TYPES",
    "SEED_MAX",
    "SLICE_BATCH_SIZE",
    "STORAGE",
    "STORAGE_TYPES",
    "SW_BATCH_SIZE",
    "TRACKING_TYPES",
    "UNET_GENERATOR",
    "UNIT_GENERATOR",
    "discriminator_scales",
    "min_patchgan_input_size",
]

# -- training data --------------------------------------------------------------------------------------------------
PATCH_SIZE = {2: (128, 128, 1), 3: (64, 64, 64)}
"""Training patch per ``spatial_dims``: axial slices in 2D, cubes in 3D."""
BATCH_SIZE = {2: 4, 3: 1}
SAMPLER_TYPES = ("uniform", "foreground")
SAMPLER_TYPE = "foreground"
NUM_WORKERS = 2
"""Threads that read and preprocess the training volumes once, before training."""
MEMORY_GB = 16.0
"""Memory the preprocessed training volumes may take."""
STORAGE_TYPES = ("auto", "memory", "disk")
STORAGE = "auto"
"""Where the preprocessed training volumes are held: in memory when they fit ``MEMORY_GB``, else in the on-disk
cache."""
CACHE_BLOCK = {2: 64, 3: 16}
"""The side of the blocks the on-disk cache stores a volume in, per patch dimensionality: 16³ float32 (16 KiB) for 3D
patches (a 64³ patch reads 25 runs of contiguous blocks), 64×64×1 for 2D slices (the side of 1 along the slices'
axis). Measured in docs/data.md (benchmarks/scale.py)."""
AUGMENT_TRANSFORMS = (
    "RandomAffine", "RandomElasticDeformation", "RandomFlip", "RandomMotion", "RandomGhosting", "RandomSpike",
    "RandomBiasField", "RandomBlur", "RandomGamma", "RandomNoise",
    "Affine", "ElasticDeformation", "Flip", "Motion", "Ghosting", "Spike", "BiasField", "Blur", "Gamma",
)
"""The torchio transforms a training domain may carry (``--augment-a``, ``transform_a``; :mod:`medtrans.data.augment`
draws the random ones' parameters itself, so batches stay reproducible). None by default."""

# -- training loop --------------------------------------------------------------------------------------------------
ITERATIONS = 20_000
DEMO_ITERATIONS = 1_000
"""The demo's training budget (``medtrans demo``): its synthetic T2w is nearly an exact inversion of the T1w, the
mapping every translator starts from, so training longer drifts from it (docs/results.md: 2,200 iterations ended
0.13 dB and 0.013 SSIM below the inverted input, 1,000 iterations 0.04 dB above and 0.006 below)."""
CHECKPOINT_INTERVAL = 1_000
"""Iterations between checkpoints (and validations); the last iteration is always saved."""
LOG_INTERVAL = 50
TRACKING_TYPES = ("tensorboard", "mlflow", "none")
PRECISION_TYPES = ("auto", "fp32", "bf16", "fp16")
PRECISION = "auto"
"""See :mod:`medtrans.precision`: fp32 (TF32 on CUDA) for small batches, bf16 autocast on CUDA for large ones."""
SEED_MAX = 2**64 - 1
"""Largest ``--seed``: seeds lie in [0, 2**64 - 1], what ``torch.manual_seed`` and NumPy's generators all accept."""
DEVICE_TYPES = ("auto", "cpu", "cuda", "cuda:N")
"""What ``--device`` accepts (``cuda:N`` for an N that torch sees)."""

# -- networks -------------------------------------------------------------------------------------------------------
# Each method's networks, unless its ``generator`` / ``discriminator`` options name another ``_target_``; given
# arguments are merged over these. Narrower than the papers' (64 wide, 9 blocks for 256² images), so every method
# trains in 3D on a GPU's memory and for minutes on a CPU; the reference sizes are a --set away (docs/methods.md).
UNET_GENERATOR = {"channels": (32, 64, 128, 256), "strides": (2, 2, 2)}
RESNET_GENERATOR = {"channels": 32, "num_res_blocks": 6}
UNIT_GENERATOR = {"channels": 32, "num_res_blocks": 4, "num_shared_blocks": 1}
DISCRIMINATOR = {"channels": 32}
DISCRIMINATOR_LAYERS = 3
ADVERSARIAL_CRITERIA = ("least_squares", "bce", "hinge")


def min_patchgan_input_size(num_layers: int) -> int:
    """Smallest side a PatchGAN with ``num_layers`` stride-2 layers accepts (its last normalised layer needs ≥ 2 voxels).

    With kernel 4 and padding 1, each stride-2 layer halves the side and each stride-1 layer removes one voxel, so
    ``num_layers`` stride-2 layers then one stride-1 normalised layer of side ≥ 2 need ``3 · 2**num_layers``.
    """
    return 3 * 2**num_layers


def discriminator_scales(spatial_dims: int, num_layers: int = DISCRIMINATOR_LAYERS, max_scales: int = 3) -> int:
    """Scales of a multi-resolution discriminator that the default patch of ``spatial_dims`` allows (at most 3).

    Each scale halves the input, and the coarsest must still hold :func:`min_patchgan_input_size` voxels a side:
    3 scales for 128² slices, 2 for 64³ patches.
    """
    side = min(s for s in PATCH_SIZE[spatial_dims] if s > 1)
    scales = 1
    while scales < max_scales and min_patchgan_input_size(num_layers) * 2**scales <= side:
        scales += 1
    return scales


# -- the start mapping ----------------------------------------------------------------------------------------------
R1_INTERVAL = 16
"""The R1 penalty (``r1_gamma``) is applied every this many iterations, scaled by it (lazy regularisation)."""
START_KNOTS = 34
"""Knots of a start mapping (:mod:`medtrans.data.start`): the background and 33 foreground quantiles (0.5 % to
99.5 %)."""

# -- evaluation -----------------------------------------------------------------------------------------------------
NORMALIZATIONS = ("target", "each", "none")
"""How ``medtrans evaluate`` scales prediction and target before scoring (see :mod:`medtrans.evaluate`)."""

# -- inference ------------------------------------------------------------------------------------------------------
ROI_SIZE = (96, 96, 96)
"""Sliding window of 3D models."""
OVERLAP = 0.25
BLEND_MODES = ("gaussian", "constant")
"""How overlapping 3D windows are blended; the first is the default."""
SW_BATCH_SIZE = 1
SLICE_BATCH_SIZE = 16
"""Slices per forward pass of 2D models."""
FAITHFULNESS_EPS = 0.15
"""ε of the faithfulness maps' normalised gradient fields, in [-1, 1] intensity units (NEC's training value)."""
FAITHFULNESS_CALIBRATION = {
    "sigma_mm": 2.0, "border_mm": 8.0, "min_volume_mm3": 30.0, "bins": 48,
    "thresholds": {"invented": 4.542, "erased": 2.922},
    "task": "T1 -> T2",
    "provenance": "benchmarks/faithfulness_regions.py on lesjak-ms-mni/patient07, patient19, patient26 (real T2s)",
}
"""The faithfulness report's built-in calibration (:mod:`medtrans.faithfulness_report`): residuals averaged by a
Gaussian of ``sigma_mm``, regions at least ``border_mm`` inside the brain and ``min_volume_mm3`` large, ``bins``
source-intensity bins, and the thresholds: the largest averaged residual of normal tissue over real co-registered
T1/T2 pairs (``provenance`` says which). Another task needs its own file (``--faithfulness-calibration``)."""
OOD_MARGIN = 1.25
"""Out-of-distribution check: a distance is far when it exceeds this many times the largest leave-one-out distance
among the training volumes (see :mod:`medtrans.data.fingerprint`), ..."""
OOD_FLOORS = {"intensity": 0.1, "spacing": 0.405, "fov": 0.405, "shape": 0.2, "depth": 0.25, "axial": 0.045,
              "edges": 0.15, "orientation": 0.5}
"""... and at least this floor per component: intensity in normalised units (mean absolute quantile difference),
spacing and field of view as a log ratio outside the training range (0.405 = 1.5×), shape in log-spread/skewness units,
depth in normalised units (largest difference of the depth profile, each taken relative to its own mean), axial in
shares of the foreground (largest difference of a slab's share minus its mirror slab's: 0.045 = 4.5 % of the brain),
edges as a log ratio outside the training range (the edge profile's polarity: 0.15 = 16 %), orientation in axes whose
header code differs from every training volume's (0.5: any; this threshold is not calibrated, it is the floor itself).
Chosen on the measured table in docs/inference.md."""
MAX_VOXELS = 2**30
"""Largest grid a volume is resampled to (a model's ``preprocessing.spacing``, a training preprocessing): 1024³ voxels,
4 GiB per float32 copy. A finer spacing than that is refused before resampling starts (a model recorded with 0.001 mm
would otherwise start a resampling of billions of voxels). It also bounds what is read: a file whose header claims more
voxels is refused from its header, before any memory is allocated (:func:`medtrans.io.read_volume`)."""

# -- scoring synthetic CTs (medtrans evaluate --protocol synthrad) --------------------------------------------------
HU_RANGE = (-1024.0, 3000.0)
"""SynthRAD's HU range: PSNR and MS-SSIM clip both volumes to it, and its width (4024 HU) is PSNR's data range (the
range of SynthRAD 2023 and of SynthRAD 2025's first evaluation code; its later code clips to [-1024, 3071]:
``--hu-range -1024 3071``). MAE is taken on the unclipped HU, as SynthRAD's code takes it."""
BODY_THRESHOLD_HU = -500.0
"""The body mask made from a CT: voxels above this (air is about -1000 HU, fat -100, lung -500 to -900)..."""
BODY_DILATION_MM = 5.0
"""...in its largest connected component, holes filled, dilated by this many mm (the skin's edge stays inside)."""
