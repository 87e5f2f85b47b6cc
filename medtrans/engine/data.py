"""The training data stream: domains → preprocessed per-domain queues → batches, replayable for exact resume."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torchio as tio
from torch.utils.data.distributed import DistributedSampler

from medtrans.data import ImageRecord, PatchBatches, Preprocessing, QueueConfig, domain_queue, list_domain, make_subject
from medtrans.data.intensity import background_value, fit_intensity
from medtrans.data.queues import paired_subject
from medtrans.data.sources import pair_domains
from medtrans.engine.rng import RNGStream
from medtrans.io import read_volume

__all__ = ["TrainStream"]


def _preprocessing(value: Preprocessing | Mapping[str, Any] | None) -> Preprocessing:
    if isinstance(value, Preprocessing):
        return value
    return Preprocessing(**dict(value or {}))


class TrainStream:
    """Endless training batches ``{"a", "b"}`` drawn from its own random stream.

    Every batch is drawn inside an :class:`~medtrans.engine.rng.RNGStream` seeded with ``seed`` (plus the rank), so the
    sequence of batches depends on the seed alone, not on what the training step draws. Resuming at iteration ``N``
    rebuilds the stream and replays ``N`` batches (``resume_type="exact"``, the default: identical batches afterwards)
    or reseeds with ``seed + N`` (``"reseed"``: instant, not identical). Under ``torch.distributed`` each rank gets a
    disjoint shard of subjects (a ``DistributedSampler`` per queue).

    Args:
        domain_a: domain A source (folder, glob or CSV; see :func:`medtrans.data.list_domain`) or records.
        domain_b: domain B source or records.
        patch: :class:`~medtrans.data.QueueConfig` or its fields.
        batch_size: patches per domain per batch.
        preprocessing_a: domain A preprocessing (or its fields).
        preprocessing_b: domain B preprocessing (or its fields).
        masks_a: optional masks for domain A (folder/glob matched by subject id).
        masks_b: optional masks for domain B.
        paired: pair A and B by subject id (pix2pix): patches come from the same place.
        seed: data seed.
        resume_type: ``"exact"`` or ``"reseed"``.
    """

    def __init__(
        self,
        domain_a: str | Sequence[ImageRecord],
        domain_b: str | Sequence[ImageRecord],
        patch: QueueConfig | Mapping[str, Any] | None = None,
        batch_size: int = 1,
        preprocessing_a: Preprocessing | Mapping[str, Any] | None = None,
        preprocessing_b: Preprocessing | Mapping[str, Any] | None = None,
        masks_a: str | None = None,
        masks_b: str | None = None,
        paired: bool = False,
        seed: int = 0,
        resume_type: str = "exact",
    ) -> None:
        if resume_type not in ("exact", "reseed"):
            raise ValueError(f"resume_type must be 'exact' or 'reseed', got {resume_type!r}")
        self.records_a = list(domain_a) if not isinstance(domain_a, str) else list_domain(domain_a, masks_a)
        self.records_b = list(domain_b) if not isinstance(domain_b, str) else list_domain(domain_b, masks_b)
        self.config = patch if isinstance(patch, QueueConfig) else QueueConfig(**dict(patch or {}))
        self.batch_size = batch_size
        self.preprocessing_a = _preprocessing(preprocessing_a)
        self.preprocessing_b = _preprocessing(preprocessing_b)
        self.paired = paired
        self.pairs = pair_domains(self.records_a, self.records_b) if paired else None
        self.seed = seed
        self.resume_type = resume_type
        self.rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        self.world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        self._start(seed)

    @property
    def spatial_dims(self) -> int:
        return 2 if 1 in self.config.patch_size else 3

    def _sampler(self, subjects: list[tio.Subject], offset: int) -> DistributedSampler | None:
        if self.world == 1:
            return None
        if len(subjects) < self.world:
            raise ValueError(f"{len(subjects)} subjects cannot be sharded over {self.world} ranks")
        return DistributedSampler(subjects, num_replicas=self.world, rank=self.rank, shuffle=True, seed=self.seed + offset)

    def _start(self, seed: int) -> None:
        self.rng = RNGStream(seed + 1000 * self.rank)
        self.consumed = 0
        with self.rng.active():
            if self.paired:
                subjects = [paired_subject(a, b) for a, b in self.pairs]
                queues = [domain_queue(subjects, {"a": self.preprocessing_a, "b": self.preprocessing_b}, self.config,
                                       self._sampler(subjects, 0))]
            else:
                sa = [make_subject(r, "a") for r in self.records_a]
                sb = [make_subject(r, "b") for r in self.records_b]
                queues = [
                    domain_queue(sa, {"a": self.preprocessing_a}, self.config, self._sampler(sa, 0)),
                    domain_queue(sb, {"b": self.preprocessing_b}, self.config, self._sampler(sb, 1)),
                ]
            self._iterator = iter(PatchBatches(queues, self.batch_size))

    def __next__(self) -> dict[str, torch.Tensor]:
        with self.rng.active():
            batch = next(self._iterator)
        self.consumed += 1
        return batch

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        return self

    def target_intensity(self, max_volumes: int = 8) -> dict[str, Any]:
        """How translations map back to domain B units: the mean 1–99th-percentile range of (up to ``max_volumes``)
        training B volumes for a percentile mapping — per-dataset statistics —, B's own window for a window mapping,
        and the input's own inverse (``"source"``) for z-scoring, which has no fixed range. ``background`` is domain
        B's background value (median of the volumes' corner values), given to voxels where the input is background."""
        spec = self.preprocessing_b.intensity
        if spec["type"] == "window":
            return {"type": "window", "low": float(spec["low"]), "high": float(spec["high"]), "background": float(spec["low"])}
        if spec["type"] != "percentile":
            return {"type": "source"}
        ranges, backgrounds = [], []
        for record in self.records_b[:max_volumes]:
            volume = read_volume(record.image)
            mask = read_volume(record.mask, allow_constant=True).data > 0 if record.mask is not None else None
            ranges.append(fit_intensity(spec, volume.data, mask).range)
            backgrounds.append(background_value(volume.data))
        low, high = np.mean(ranges, axis=0)
        return {"type": "window", "low": float(low), "high": float(high), "background": float(np.median(backgrounds))}

    def resume_at(self, iteration: int) -> None:
        """Position the stream as it was after ``iteration`` batches of a run with the same seed."""
        if self.resume_type == "reseed":
            self._start(self.seed + iteration)
            return
        if iteration < self.consumed:
            self._start(self.seed)
        while self.consumed < iteration:
            next(self)
