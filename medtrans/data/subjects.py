"""Training subjects: each one read, validated and preprocessed once, then held in memory or on disk.

:func:`load_subject` turns one subject's image records (one per key: ``"a"``, ``"b"``, or both for paired data) into a
:class:`CachedVolume` whose images live in memory (torch tensors) or in the on-disk cache (:class:`~medtrans.data.
blocks.BlockArray`, read block by block); :func:`estimated_bytes` sizes a record from its header before
anything is read.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import nibabel as nib
import numpy as np
import torch

from medtrans.data.blocks import BlockArray, Runs
from medtrans.data.cache import DiskCache
from medtrans.data.fingerprint import volume_stats
from medtrans.data.intensity import foreground_mask
from medtrans.data.preprocessing import Preprocessing, prepare
from medtrans.data.sources import ImageRecord
from medtrans.errors import InputError
from medtrans.io import is_nifti, read_mask, read_volume

if TYPE_CHECKING:
    from medtrans.data.stream import PatchConfig

__all__ = ["CachedVolume", "ForegroundVolumes", "estimated_bytes", "load_subject"]

_BYTES_PER_VOXEL = 8  # float32 data + at most one int32 foreground index


@dataclass
class CachedVolume:
    """One preprocessed subject, in memory or memory-mapped from the on-disk cache.

    Attributes:
        subject_id: the subject.
        images: ``{key: (X, Y, Z) float32 tensor or BlockArray}`` on one grid (``"a"``, ``"b"``, or both for paired
            data).
        foreground: flat indices of the voxels the foreground sampler draws from (an array, or :class:`Runs` of them).
        ranges: per key, the raw intensities mapped to -1 and 1 (the fitted source mapping).
        backgrounds: per key, the raw background value.
        stats: per key, the volume's :func:`~medtrans.data.fingerprint.volume_stats` (the model's training
            fingerprint is built from domain A's).
    """

    subject_id: str
    images: dict[str, torch.Tensor | BlockArray]
    foreground: np.ndarray | Runs
    ranges: dict[str, tuple[float, float]]
    backgrounds: dict[str, float]
    stats: dict[str, dict[str, list[float]]] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(next(iter(self.images.values())).shape)


def estimated_bytes(record: ImageRecord, spacing: Sequence[float] | None,
                     patch_size: Sequence[int] | None = None) -> tuple[int, int]:
    """Bytes the record takes in memory after preprocessing: ``(as resampled, also padded to patch_size)``."""
    if record.image.is_dir() or not is_nifti(record.image):
        return 0, 0  # a DICOM series: counted once read
    try:
        header = nib.load(str(record.image)).header
    except Exception as err:  # noqa: BLE001 - any reader failure is the file's problem
        raise InputError(record.image, f"is not a readable NIfTI image ({err})") from err
    shape = np.array((*header.get_data_shape()[:3], 1, 1)[:3], dtype=float)  # a 2D file is refused when read
    zooms = np.array((*header.get_zooms()[:3], 1, 1)[:3], dtype=float)
    if spacing is not None and np.isfinite(zooms).all() and (zooms > 0).all():  # a bad pixdim is refused when read
        shape = np.ceil(shape * zooms / np.array(spacing, dtype=float))
    padded = np.maximum(shape, np.array(patch_size, dtype=float)) if patch_size is not None else shape
    return int(np.prod(shape)) * _BYTES_PER_VOXEL, int(np.prod(padded)) * _BYTES_PER_VOXEL


def _check_padding(patch_size: Sequence[int], grid: Sequence[int], memory_gb: float, image: Path) -> None:
    """Refuse, before padding, a volume that padding to the patch would take over the whole memory budget."""
    padded = [max(int(p), int(s)) for p, s in zip(patch_size, grid)]
    need = int(np.prod(np.array(padded, dtype=float))) * _BYTES_PER_VOXEL
    if need > memory_gb * 2**30:
        raise InputError("--patch-size", f"{'x'.join(map(str, patch_size))} is larger than {image} "
                         f"{tuple(int(s) for s in grid)}, and padding it to the patch would take {need / 2**30:.2g} GiB, "
                         f"over --memory-gb {memory_gb:g}; use a --patch-size no larger than the volumes")


def _prepare(records: Mapping[str, ImageRecord], preprocessing: Mapping[str, Preprocessing],
             config: PatchConfig) -> tuple[dict[str, np.ndarray], np.ndarray, dict[str, Any]]:
    """Read, validate and preprocess one subject's images (one per key, co-registered when several).

    Returns:
        ``(images, foreground, meta)``: the images on the network grid (not yet padded to the patch), the flat
        indices of the sampler's foreground, and ``{"subject_id", "ranges", "backgrounds", "stats"}``.
    """
    first = next(iter(records.values()))
    mask_path = next((r.mask for r in records.values() if r.mask is not None), None)
    images, ranges, backgrounds, stats, grid_mask, grid = {}, {}, {}, {}, None, None
    for key, record in records.items():
        volume = read_volume(record.image)
        mask = read_mask(mask_path, volume) if mask_path is not None else None
        prepared = prepare(volume, preprocessing[key], mask)
        if grid is not None and prepared.data.shape != grid:
            raise InputError(record.image, f"grid {prepared.data.shape} differs from its pair {first.image} {grid}")
        grid = prepared.data.shape
        if grid_mask is None:
            grid_mask = prepared.mask
            if grid_mask is None:
                grid_mask = foreground_mask(prepared.source)
                if prepared.data.shape != grid_mask.shape:  # resampled
                    grid_mask = prepared.to_network_grid(grid_mask.astype(np.float32), label=True) > 0.5
                grid_mask &= prepared.data > config.foreground_threshold
        images[key] = np.ascontiguousarray(prepared.data, dtype=np.float32)
        ranges[key] = [float(v) for v in prepared.intensity.range]
        backgrounds[key] = float(prepared.background)
        stats[key] = volume_stats(prepared)
    meta = {"subject_id": first.subject_id, "ranges": ranges, "backgrounds": backgrounds, "stats": stats}
    return images, _indices(grid_mask), meta


def _indices(mask: np.ndarray) -> np.ndarray:
    foreground = np.flatnonzero(mask)
    return foreground.astype(np.int32) if mask.size < 2**31 else foreground


def _padded(images: dict[str, np.ndarray], foreground: np.ndarray, config: PatchConfig,
            image: Path) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """``images`` and ``foreground`` padded to at least the patch (a no-op for volumes at least that large)."""
    grid = next(iter(images.values())).shape
    short = [max(0, p - s) for p, s in zip(config.patch_size, grid)]
    if not any(short):
        return images, foreground
    _check_padding(config.patch_size, grid, config.memory_gb, image)
    padding = [(d // 2, d - d // 2) for d in short]
    mask = np.zeros(int(np.prod(grid)), dtype=bool)
    mask[foreground] = True
    mask = np.pad(mask.reshape(grid), padding, constant_values=False)
    return {k: np.pad(v, padding, constant_values=float(v.min())) for k, v in images.items()}, _indices(mask)


def _volume(images: Mapping[str, np.ndarray | BlockArray], foreground: np.ndarray | Runs,
            meta: Mapping[str, Any]) -> CachedVolume:
    return CachedVolume(meta["subject_id"],
                        {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in images.items()},
                        foreground, {k: tuple(v) for k, v in meta["ranges"].items()}, dict(meta["backgrounds"]),
                        dict(meta["stats"]))


def load_subject(records: Mapping[str, ImageRecord], preprocessing: Mapping[str, Preprocessing], config: PatchConfig,
          cache: DiskCache | None) -> CachedVolume:
    """One subject, in memory (``cache`` None) or read from its (built once) entry in ``cache``."""
    image = next(iter(records.values())).image
    if cache is None:
        images, foreground, meta = _prepare(records, preprocessing, config)
        return _volume(*_padded(images, foreground, config, image), meta)
    key = cache.key(records, preprocessing, config.foreground_threshold)
    entry = cache.put(key, lambda: _prepare(records, preprocessing, config))
    meta = {**entry.meta, "subject_id": next(iter(records.values())).subject_id}  # an entry may serve several ids
    if any(p > s for p, s in zip(config.patch_size, entry.meta["shape"])):  # small: padded, and held in memory
        images = {k: a.read() for k, a in entry.images.items()}
        return _volume(*_padded(images, entry.foreground.read(), config, image), meta)
    return _volume(entry.images, entry.foreground, meta)


class ForegroundVolumes(Sequence):
    """``(image, foreground mask)`` of ``volumes``, each read (from memory or disk) when indexed."""

    def __init__(self, volumes: list[CachedVolume], key: str) -> None:
        self.volumes, self.key = volumes, key

    def __len__(self) -> int:
        return len(self.volumes)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:  # type: ignore[override]
        volume = self.volumes[index]
        image = volume.images[self.key]
        image = image.numpy() if isinstance(image, torch.Tensor) else image.read()
        mask = np.zeros(image.size, dtype=bool)
        mask[volume.foreground[:]] = True
        return image, mask.reshape(image.shape)
