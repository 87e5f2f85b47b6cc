"""Training batches: domains → validated, preprocessed volumes in memory or on disk → patches cut by a thread.

Every training volume is read with :func:`medtrans.io.read_volume` (the checks of ``translate`` and ``evaluate``) and
preprocessed with :func:`medtrans.data.preprocessing.prepare` (the path inference takes) exactly once, by
``num_workers`` threads. A training set that fits the memory budget (checked from the headers, before anything is read)
is held in memory; a larger one (or any, with ``storage="disk"``) is written once to the on-disk cache
(:mod:`medtrans.data.cache`, stored as contiguous blocks) and read block by block. Patches are then sliced out by
``num_workers`` background threads (:class:`~medtrans.data.prefetch.Prefetcher`) that keep ``prefetch`` batches ready
(in pinned memory when CUDA is available) while the step runs.

Batch ``i`` is a function of ``(seed, rank, i)`` alone: its random generator is seeded with those numbers. So the
batches do not depend on the number of workers, on the prefetch threads, or on what the training step draws, and a run
resumed at iteration ``N`` continues with batch ``N`` — exact and instant. Under ``torch.distributed`` each rank holds
a disjoint shard of the subjects.

Patches with one side of 1 (e.g. ``(128, 128, 1)``) are 2D slices, returned with that axis removed.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medtrans import defaults
from medtrans.data.blocks import block_shape
from medtrans.data.cache import DiskCache, default_cache_dir
from medtrans.data.fingerprint import build_fingerprint
from medtrans.data.prefetch import Prefetcher
from medtrans.data.preprocessing import Preprocessing
from medtrans.data.sources import ImageRecord, list_domain, pair_domains
from medtrans.data.subjects import (
    CachedVolume,
    ForegroundVolumes,
    estimated_bytes,
    load_subject,
)
from medtrans.distributed import rank_and_world
from medtrans.errors import InputError

__all__ = ["SAMPLER_TYPES", "PatchConfig", "TrainStream", "patch_spatial_dims"]

SAMPLER_TYPES = defaults.SAMPLER_TYPES
logger = logging.getLogger("medtrans.data")


def patch_spatial_dims(patch_size: Sequence[int]) -> int:
    """2 for patches with exactly one side of 1 (slices), 3 otherwise.

    Raises:
        ValueError: for patches with more than one side of 1.
    """
    ones = sum(1 for s in patch_size if s == 1)
    if ones > 1:
        raise ValueError(f"patch_size {tuple(patch_size)} has more than one side of 1")
    return 2 if ones == 1 else 3


@dataclass
class PatchConfig:
    """How patches are drawn.

    Attributes:
        patch_size: three sides; one side of 1 makes 2D slices (e.g. ``(128, 128, 1)`` axial slices).
        sampler_type: ``"uniform"`` (patch corners uniform over the volume) or ``"foreground"`` (each patch is
            centred, as far as the volume allows, on a voxel drawn uniformly from the mask or, without one, from the
            voxels that differ from the background and lie above ``foreground_threshold``).
        foreground_threshold: in normalised units ([-1, 1] after percentile and window mappings): keeps the noisy air
            of unstripped scans, which differs from the background value but maps close to -1, out of the foreground.
        num_workers: threads reading and preprocessing the volumes, once, before training; then the threads making
            the prefetched batches (at most ``prefetch``), which overlap the reads of an on-disk cache.
        prefetch: batches background threads keep ready, in pinned memory (0: cut each batch when asked). Default:
            8 when CUDA is available (the threads work while the GPU computes), else 0 (on a CPU they would compete
            with torch's threads for the cores, to save the ~0.2 ms a 48³ batch takes to cut).
        memory_gb: memory the preprocessed volumes may take in memory (GiB).
        storage: where the preprocessed volumes are held: ``"memory"`` (a training set over ``memory_gb`` is refused
            before anything is read), ``"disk"`` (the on-disk cache, memory-mapped; resident memory stays small) or
            ``"auto"`` (memory when the set fits ``memory_gb``, else disk). The batches are the same in each.
        cache_dir: the on-disk cache's folder (default :func:`~medtrans.data.cache.default_cache_dir`); runs may
            share it.
    """

    patch_size: Sequence[int] = defaults.PATCH_SIZE[3]
    sampler_type: str = defaults.SAMPLER_TYPE
    foreground_threshold: float = -0.9
    num_workers: int = defaults.NUM_WORKERS
    prefetch: int | None = None
    memory_gb: float = defaults.MEMORY_GB
    storage: str = defaults.STORAGE
    cache_dir: str | Path | None = None

    def __post_init__(self) -> None:
        self.patch_size = tuple(int(s) for s in self.patch_size)
        if len(self.patch_size) != 3 or min(self.patch_size) < 1:
            raise ValueError(f"patch_size needs three positive sides, got {self.patch_size}")
        patch_spatial_dims(self.patch_size)
        if self.sampler_type not in SAMPLER_TYPES:
            raise ValueError(f"sampler_type must be one of {SAMPLER_TYPES}, got {self.sampler_type!r}")
        if self.prefetch is None:
            self.prefetch = 8 if torch.cuda.is_available() else 0
        if self.num_workers < 0 or self.prefetch < 0:
            raise ValueError(f"num_workers and prefetch must be >= 0, got {self.num_workers}, {self.prefetch}")
        if self.storage not in defaults.STORAGE_TYPES:
            raise ValueError(f"storage must be one of {defaults.STORAGE_TYPES}, got {self.storage!r}")
        if not self.memory_gb > 0:
            raise ValueError(f"memory_gb must be positive, got {self.memory_gb}")


class TrainStream:
    """Endless training batches ``{"a": (B, 1, *patch), "b": ...}`` cut from volumes held in memory.

    Args:
        domain_a: domain A source (folder, glob, CSV or single file; see :func:`medtrans.data.list_domain`) or records.
        domain_b: domain B source or records.
        patch: :class:`PatchConfig` or its fields.
        batch_size: patches per domain per batch.
        preprocessing_a: domain A preprocessing (or its fields).
        preprocessing_b: domain B preprocessing (or its fields).
        masks_a: optional masks for domain A (folder/glob matched by subject id).
        masks_b: optional masks for domain B.
        paired: pair A and B by subject id (pix2pix): both patches come from the same place.
        seed: data seed.
        transform_a: a torchio transform applied to domain A's patches as they are cut (``tio.Compose([...])``, or a
            list); see :mod:`medtrans.data.augment` for where and how, reproducibly.
        transform_b: domain B's.

    Raises:
        InputError: naming the file, for a volume that cannot be read or preprocessed, or the option, for a training
            set over the memory budget.
    """

    def __init__(
        self,
        domain_a: str | Path | Sequence[ImageRecord],
        domain_b: str | Path | Sequence[ImageRecord],
        patch: PatchConfig | Mapping[str, Any] | None = None,
        batch_size: int = 1,
        preprocessing_a: Preprocessing | Mapping[str, Any] | None = None,
        preprocessing_b: Preprocessing | Mapping[str, Any] | None = None,
        masks_a: str | Path | None = None,
        masks_b: str | Path | None = None,
        paired: bool = False,
        seed: int = 0,
        transform_a: Any = None,
        transform_b: Any = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.config = patch if isinstance(patch, PatchConfig) else PatchConfig(**dict(patch or {}))
        self.batch_size = batch_size
        self.preprocessing_a = _preprocessing(preprocessing_a)
        self.preprocessing_b = _preprocessing(preprocessing_b)
        self.paired = paired
        self.seed = seed
        self.augment = None
        if transform_a is not None or transform_b is not None:
            from medtrans.data.augment import (
                Augment,  # imports torchio: for augmented streams only
            )

            self.augment = Augment(transform_a, transform_b)
        self.rank, self.world = rank_and_world()
        records_a = list_domain(domain_a, masks_a) if isinstance(domain_a, (str, Path)) else list(domain_a)
        records_b = list_domain(domain_b, masks_b) if isinstance(domain_b, (str, Path)) else list(domain_b)
        pre = {"a": self.preprocessing_a, "b": self.preprocessing_b}
        if paired:
            subjects = [{"a": a, "b": b} for a, b in pair_domains(records_a, records_b)]
            self.domains = {"ab": self._cache("A and B", self._shard(subjects), pre)}
        else:
            self.domains = {
                "a": self._cache("A", self._shard([{"a": r} for r in records_a]), pre),
                "b": self._cache("B", self._shard([{"b": r} for r in records_b]), pre),
            }
        self._next = 0
        self._worker: Prefetcher | None = None

    # -- loading --------------------------------------------------------------------------------------------------
    def _shard(self, subjects: list[dict[str, ImageRecord]]) -> list[dict[str, ImageRecord]]:
        """This rank's disjoint share of the subjects (a seeded permutation dealt out rank by rank)."""
        if self.world == 1:
            return subjects
        if len(subjects) < self.world:
            raise InputError("--data-a/--data-b", f"{len(subjects)} subjects cannot be shared by {self.world} processes")
        order = np.random.default_rng(self.seed).permutation(len(subjects))
        return [subjects[i] for i in sorted(order[self.rank :: self.world])]

    def _cache(self, name: str, subjects: list[dict[str, ImageRecord]], pre: Mapping[str, Preprocessing]) -> list[CachedVolume]:
        spacing = next(iter(pre.values())).spacing
        sizes = [estimated_bytes(r, spacing, self.config.patch_size) for s in subjects for r in s.values()]
        need, padded = sum(n for n, _ in sizes), sum(p for _, p in sizes)
        budget = self.config.memory_gb * 2**30
        storage = self.config.storage
        if storage == "auto":
            storage = "memory" if padded <= budget else "disk"
        if storage == "memory" and need > budget:
            raise InputError(
                "memory_gb", f"domain {name}: {len(subjects)} volumes need about {need / 2**30:.1f} GiB in memory after "
                f"preprocessing, over the budget of {self.config.memory_gb:g} GiB; raise it (--memory-gb), hold them "
                "on disk (--storage disk), train on fewer volumes, or resample to a coarser spacing")
        if storage == "disk":  # only the volumes smaller than the patch are padded, and held in memory
            padded = sum(p for n, p in sizes if p > n)
        if padded > budget:
            patch = "x".join(map(str, self.config.patch_size))
            raise InputError(
                "--patch-size", f"{patch} is larger than volumes of domain {name}, which are padded to it: "
                f"{len(subjects)} volumes would then need about {padded / 2**30:.1f} GiB in memory, over --memory-gb "
                f"{self.config.memory_gb:g}; use a --patch-size no larger than the volumes")
        cache = None
        if storage == "disk":
            cache = DiskCache(self.config.cache_dir if self.config.cache_dir is not None else default_cache_dir(),
                              block_shape(self.config.patch_size))
        failed = threading.Event()  # the first bad volume stops the rest: no more is read or cached

        def load(subject: dict[str, ImageRecord]) -> CachedVolume | None:
            if failed.is_set():
                return None
            try:
                return load_subject(subject, {k: pre[k] for k in subject}, self.config, cache)
            except BaseException:
                failed.set()
                raise

        with ThreadPoolExecutor(max(1, self.config.num_workers)) as pool:
            volumes = list(pool.map(load, subjects))
        held = sum(t.numel() * 4 + v.foreground.nbytes for v in volumes for t in v.images.values()
                   if isinstance(t, torch.Tensor))
        if cache is None and held > budget:
            raise InputError("memory_gb", f"domain {name} takes {held / 2**30:.1f} GiB in memory after preprocessing, "
                                          f"over the budget of {self.config.memory_gb:g} GiB; raise it (--memory-gb)")
        if cache is None:
            logger.info("domain %s: %d volumes in memory (%.2f GiB)", name, len(volumes), held / 2**30)
        else:
            logger.info("domain %s: %d volumes on disk in %s (%.2f GiB)", name, len(volumes), cache.root, need / 2**30)
        return volumes

    # -- batches --------------------------------------------------------------------------------------------------
    @property
    def spatial_dims(self) -> int:
        return patch_spatial_dims(self.config.patch_size)

    def _cut(self, rng: np.random.Generator, volume: CachedVolume) -> dict[str, torch.Tensor | np.ndarray]:
        patch, shape = self.config.patch_size, volume.shape
        if self.config.sampler_type == "foreground" and volume.foreground.size:
            centre = np.unravel_index(int(volume.foreground[rng.integers(volume.foreground.size)]), shape)
            corner = [min(max(int(c) - p // 2, 0), s - p) for c, p, s in zip(centre, patch, shape)]
        else:
            corner = [int(rng.integers(s - p + 1)) for p, s in zip(patch, shape)]
        region = tuple(slice(c, c + p) for c, p in zip(corner, patch))
        if self.augment is not None:
            return self.augment(volume.images, region, rng)
        return {k: t[region] for k, t in volume.images.items()}  # tensor views, or copies read from the disk cache

    def batch(self, index: int) -> dict[str, torch.Tensor]:
        """Batch number ``index`` (a pure function of the seed, the rank and ``index``)."""
        rng = np.random.default_rng((self.seed, self.rank, index))
        out: dict[str, torch.Tensor] = {}
        for volumes in self.domains.values():
            patches = [self._cut(rng, volumes[int(rng.integers(len(volumes)))]) for _ in range(self.batch_size)]
            for key in patches[0]:
                parts = [p[key] for p in patches]  # tensor views (copied here), or arrays read from the disk cache
                if isinstance(parts[0], torch.Tensor):
                    stacked = torch.stack(parts)[:, None]
                else:  # already copies: one patch is used as it is
                    stacked = torch.from_numpy(np.stack(parts) if len(parts) > 1 else parts[0][None])[:, None]
                if self.spatial_dims == 2:
                    stacked = stacked.squeeze(2 + self.config.patch_size.index(1))
                out[key] = stacked
        return out

    def __next__(self) -> dict[str, torch.Tensor]:
        if self.config.prefetch == 0:
            batch = self.batch(self._next)
        else:
            if self._worker is None:
                self._worker = Prefetcher(self, self._next)
            batch = self._worker.get()
        self._next += 1
        return batch

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        return self

    def resume_at(self, iteration: int) -> None:
        """Continue with the batch a run with the same seed would draw after ``iteration`` batches."""
        self.close()
        self._next = iteration

    def close(self) -> None:
        """Stop the prefetch thread (it restarts on the next batch)."""
        if self._worker is not None:
            self._worker.stop()
            self._worker = None

    def foreground_volumes(self, key: str) -> Sequence[tuple[np.ndarray, np.ndarray]]:
        """``(image, foreground mask)`` of every domain-``key`` (``"a"`` or ``"b"``) volume, images in normalised
        units, masks those the foreground sampler draws from (for :func:`~medtrans.data.start.estimate_start`); a
        sequence that reads each volume when indexed, so a training set on disk is not loaded whole."""
        return ForegroundVolumes([v for d in self.domains.values() for v in d if key in v.images], key)

    def fingerprint(self) -> dict[str, Any]:
        """Domain A's training fingerprint (:func:`~medtrans.data.fingerprint.build_fingerprint`), from the statistics
        taken as each volume was loaded (no file is read again); with several processes, this rank's share."""
        return build_fingerprint([v.stats["a"] for d in self.domains.values() for v in d if "a" in v.stats])

    def target_intensity(self) -> dict[str, Any]:
        """How translations map back to domain B's units, from the B volumes in memory.

        A percentile mapping or a z-scoring to ± k standard deviations gives the mean raw range of the training B
        volumes (per-dataset statistics) and their median background; a window mapping gives B's own window; plain
        z-scoring, which has no fixed range, maps back with the input's own inverse (``"source"``).
        """
        spec = self.preprocessing_b.intensity
        if spec["type"] == "window":
            return {"type": "window", "low": float(spec["low"]), "high": float(spec["high"]), "background": float(spec["low"])}
        if spec["type"] == "zscore" and "sigmas" not in spec:
            return {"type": "source"}
        volumes = [v for d in self.domains.values() for v in d if "b" in v.ranges]
        low, high = np.mean([v.ranges["b"] for v in volumes], axis=0)
        return {"type": "window", "low": float(low), "high": float(high),
                "background": float(np.median([v.backgrounds["b"] for v in volumes]))}


def _preprocessing(value: Preprocessing | Mapping[str, Any] | None) -> Preprocessing:
    return value if isinstance(value, Preprocessing) else Preprocessing(**dict(value or {}))

