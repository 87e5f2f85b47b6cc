"""Patch sampling: files → torchio subjects → one torchio Queue per domain → zipped (un)paired batches.

Volumes of domain A and B from different patients cannot share one torchio ``Subject``, so each domain gets its own
queue and :class:`PatchBatches` zips them. Paired data (pix2pix, validation) puts both images in one subject so patches
come from the same place. Patches with one side of 1 (e.g. ``(128, 128, 1)``) are 2D slices cut from the volumes and
are returned with that axis removed.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torchio as tio
from torch.utils.data import DataLoader, Sampler

from medtrans.data.intensity import fit_intensity, validate_spec
from medtrans.data.sources import ImageRecord

__all__ = [
    "SAMPLER_TYPES",
    "AddSamplingMap",
    "DropMask",
    "NormalizeIntensity",
    "PadToAtLeast",
    "PatchBatches",
    "Preprocessing",
    "QueueConfig",
    "domain_queue",
    "make_subject",
    "paired_subject",
    "patch_spatial_dims",
]

SAMPLER_TYPES = ("uniform", "foreground")
MASK_KEY = "mask"
SAMPLING_MAP_KEY = "sampling_map"


@dataclass
class Preprocessing:
    """Per-domain preprocessing, chosen in config.

    Attributes:
        intensity: source intensity spec (see :mod:`medtrans.data.intensity`), default 1–99th foreground percentile to
            [-1, 1].
        canonical: reorient to RAS+ first (so axis 2 is superior–inferior: ``(H, W, 1)`` patches are axial slices).
        spacing: resample to this voxel size in mm (``None`` keeps the native grid).
    """

    intensity: dict[str, Any] = field(default_factory=lambda: {"type": "percentile", "lower": 1.0, "upper": 99.0})
    canonical: bool = True
    spacing: tuple[float, float, float] | None = None

    def __post_init__(self) -> None:
        self.intensity = validate_spec(self.intensity)
        if self.spacing is not None and (len(self.spacing) != 3 or min(self.spacing) <= 0):
            raise ValueError(f"spacing must be three positive numbers, got {self.spacing}")


@dataclass
class QueueConfig:
    """How patches are drawn.

    Attributes:
        patch_size: three sides; one side of 1 makes 2D slices (e.g. ``(128, 128, 1)`` axial slices).
        samples_per_volume: patches drawn from a volume each time it is loaded.
        max_length: patches held by the queue.
        sampler_type: ``"uniform"`` or ``"foreground"`` (patch centres drawn inside the mask, or where the normalised
            image exceeds ``foreground_threshold`` when there is no mask).
        foreground_threshold: threshold in normalised units ([-1, 1] after percentile/window mappings).
        num_workers: subprocesses loading volumes.
    """

    patch_size: Sequence[int] = (64, 64, 64)
    samples_per_volume: int = 8
    max_length: int = 64
    sampler_type: str = "uniform"
    foreground_threshold: float = -0.9
    num_workers: int = 0

    def __post_init__(self) -> None:
        self.patch_size = tuple(int(s) for s in self.patch_size)
        if len(self.patch_size) != 3 or min(self.patch_size) < 1:
            raise ValueError(f"patch_size needs three positive sides, got {self.patch_size}")
        if self.sampler_type not in SAMPLER_TYPES:
            raise ValueError(f"sampler_type must be one of {SAMPLER_TYPES}, got {self.sampler_type!r}")
        patch_spatial_dims(self.patch_size)


def patch_spatial_dims(patch_size: Sequence[int]) -> int:
    """2 for patches with exactly one side of 1 (slices), 3 otherwise.

    Raises:
        ValueError: for patches with more than one side of 1.
    """
    ones = sum(1 for s in patch_size if s == 1)
    if ones > 1:
        raise ValueError(f"patch_size {tuple(patch_size)} has more than one side of 1")
    return 2 if ones == 1 else 3


class NormalizeIntensity(tio.Transform):
    """Fit each image's intensity spec to that image (inside the subject's mask, if any) and apply it."""

    def __init__(self, specs: Mapping[str, Mapping[str, Any]], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.specs = {k: validate_spec(v) for k, v in specs.items()}
        self.args_names = ["specs"]

    def apply_transform(self, subject: tio.Subject) -> tio.Subject:
        mask = subject[MASK_KEY].data[0].numpy() if MASK_KEY in subject else None
        for key, spec in self.specs.items():
            image = subject[key]
            data = image.data.numpy()
            mapped = torch.stack([torch.from_numpy(fit_intensity(spec, c, mask).forward(c)) for c in data])
            image.set_data(mapped.float())
        return subject


class PadToAtLeast(tio.Transform):
    """Pad (with each image's minimum) so every side is at least the patch side."""

    def __init__(self, patch_size: Sequence[int], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.patch_size = tuple(patch_size)
        self.args_names = ["patch_size"]

    def apply_transform(self, subject: tio.Subject) -> tio.Subject:
        shape = subject.spatial_shape
        short = [max(0, p - s) for p, s in zip(self.patch_size, shape)]
        if not any(short):
            return subject
        padding = [v for d in short for v in (d // 2, d - d // 2)]
        for image in subject.get_images(intensity_only=False):
            value = float(image.data.min())
            padded = tio.Pad(padding, padding_mode=value)(tio.Subject(x=image))["x"]
            image.set_data(padded.data)
            image.affine = padded.affine
        return subject


class AddSamplingMap(tio.Transform):
    """Add the foreground probability map the weighted sampler draws patch centres from."""

    def __init__(self, image_key: str, threshold: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.image_key = image_key
        self.threshold = threshold
        self.args_names = ["image_key", "threshold"]

    def apply_transform(self, subject: tio.Subject) -> tio.Subject:
        image = subject[self.image_key]
        if MASK_KEY in subject:
            weights = (subject[MASK_KEY].data > 0).float()
        else:
            weights = (image.data > self.threshold).any(dim=0, keepdim=True).float()
        if not weights.any():
            weights = torch.ones_like(weights)  # no foreground: fall back to uniform rather than fail mid-training
        subject.add_image(tio.LabelMap(tensor=weights, affine=image.affine), SAMPLING_MAP_KEY)
        return subject


class DropMask(tio.Transform):
    """Remove the mask once intensity statistics and the sampling map are made, so patches of subjects with and
    without masks have the same keys (the mask itself is never trained on)."""

    def apply_transform(self, subject: tio.Subject) -> tio.Subject:
        if MASK_KEY in subject:
            subject.remove_image(MASK_KEY)
        return subject


def make_subject(record: ImageRecord, key: str) -> tio.Subject:
    """A torchio subject holding one domain's image under ``key`` (and its mask under ``"mask"``)."""
    images: dict[str, Any] = {key: tio.ScalarImage(record.image), "subject_id": record.subject_id}
    if record.mask is not None:
        images[MASK_KEY] = tio.LabelMap(record.mask)
    return tio.Subject(**images)


def paired_subject(a: ImageRecord, b: ImageRecord) -> tio.Subject:
    """A torchio subject with both domains' co-registered images under ``"a"`` and ``"b"`` (and A's mask)."""
    images: dict[str, Any] = {"a": tio.ScalarImage(a.image), "b": tio.ScalarImage(b.image), "subject_id": a.subject_id}
    mask = a.mask or b.mask
    if mask is not None:
        images[MASK_KEY] = tio.LabelMap(mask)
    return tio.Subject(**images)


def _transform(
    specs: Mapping[str, Preprocessing], config: QueueConfig
) -> tio.Compose:
    first = next(iter(specs.values()))
    steps: list[tio.Transform] = []
    if first.canonical:
        steps.append(tio.ToCanonical())
    if first.spacing is not None:
        steps.append(tio.Resample(first.spacing))
    steps.append(NormalizeIntensity({k: p.intensity for k, p in specs.items()}))
    steps.append(PadToAtLeast(config.patch_size))
    if config.sampler_type == "foreground":
        steps.append(AddSamplingMap(next(iter(specs)), config.foreground_threshold))
    steps.append(DropMask())
    return tio.Compose(steps)


def domain_queue(
    subjects: Sequence[tio.Subject],
    preprocessing: Mapping[str, Preprocessing],
    config: QueueConfig,
    subject_sampler: Sampler | None = None,
) -> tio.Queue:
    """One torchio Queue of preprocessed patches.

    Args:
        subjects: from :func:`make_subject` (one domain) or :func:`paired_subject` (both).
        preprocessing: the preprocessing of each image key in the subjects (``{"a": ...}`` or ``{"a": ..., "b": ...}``);
            geometry steps (canonical, spacing) are taken from the first.
        config: patch size, sampler and queue sizes.
        subject_sampler: e.g. a ``DistributedSampler`` to shard subjects per rank (then subjects are not shuffled by the
            queue itself).

    Returns:
        a queue whose items are patch subjects.
    """
    if not subjects:
        raise ValueError("no subjects to sample patches from")
    dataset = tio.SubjectsDataset(list(subjects), transform=_transform(preprocessing, config))
    sampler: tio.data.PatchSampler
    if config.sampler_type == "foreground":
        sampler = tio.WeightedSampler(config.patch_size, probability_map=SAMPLING_MAP_KEY)
    else:
        sampler = tio.UniformSampler(config.patch_size)
    return tio.Queue(
        dataset,
        max_length=max(config.max_length, config.samples_per_volume),
        samples_per_volume=config.samples_per_volume,
        sampler=sampler,
        subject_sampler=subject_sampler,
        num_workers=config.num_workers,
        shuffle_subjects=subject_sampler is None,
        shuffle_patches=True,
        start_background=False,
    )


class PatchBatches:
    """Endless batches zipped from several queues: ``{"a": (B, C, *patch), "b": ...}``.

    Each queue is drained by its own loader and restarted when exhausted, so domains with unequal volume counts are
    fine. Image keys of every queue's patches are merged into one dict (a paired queue gives both ``"a"`` and ``"b"``
    from the same location). Slice patches come out 2D.

    Args:
        queues: the queues to zip.
        batch_size: patches per key per batch.
        keys: image keys to return (``("a", "b")`` by default).
    """

    def __init__(self, queues: Sequence[tio.Queue], batch_size: int, keys: Sequence[str] = ("a", "b")) -> None:
        self.queues = list(queues)
        self.batch_size = batch_size
        self.keys = tuple(keys)
        patch_size = self.queues[0].sampler.patch_size
        self.squeeze_axis = [i for i, s in enumerate(patch_size) if s == 1]

    def _loader(self, queue: tio.Queue) -> Iterator[dict]:
        while True:
            yield from DataLoader(queue, batch_size=self.batch_size, num_workers=0, drop_last=True)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        loaders = [self._loader(q) for q in self.queues]
        while True:
            batch: dict[str, torch.Tensor] = {}
            for loader in loaders:
                patches = next(loader)
                for key in self.keys:
                    if key in patches:
                        data = patches[key][tio.DATA]
                        if self.squeeze_axis:
                            data = data.squeeze(2 + self.squeeze_axis[0])
                        batch[key] = data
                if "subject_id" in patches:
                    batch.setdefault("subject_id", patches["subject_id"])
            missing = [k for k in self.keys if k not in batch]
            if missing:
                raise KeyError(f"no queue provides {missing}")
            yield batch
