"""One preprocessing for training and inference: a validated volume → RAS+ voxel order → optional resampling → the
source intensity mapping, each step recorded so a network output can be taken back to the input's grid.

Training (:mod:`medtrans.data.stream`) and inference (:mod:`medtrans.inference`) both call :func:`prepare`, so the
network sees the same kind of input in both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import nibabel as nib
import numpy as np
import torch
from nibabel.orientations import (
    apply_orientation,
    axcodes2ornt,
    io_orientation,
    ornt_transform,
)

from medtrans.data.intensity import (
    AffineIntensity,
    background_value,
    fit_intensity,
    validate_spec,
)
from medtrans.defaults import MAX_VOXELS
from medtrans.errors import InputError
from medtrans.io import Volume

__all__ = ["Canonical", "Prepared", "Preprocessing", "grid_problem", "network_shape", "prepare"]


@dataclass
class Preprocessing:
    """A domain's preprocessing, chosen in config and saved with the trained translator.

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
        if self.spacing is not None:
            self.spacing = tuple(float(s) for s in self.spacing)
            if len(self.spacing) != 3 or min(self.spacing) <= 0:
                raise ValueError(f"spacing must be three positive numbers, got {self.spacing}")

    def to_dict(self) -> dict[str, Any]:
        return {"intensity": dict(self.intensity), "canonical": self.canonical,
                "spacing": list(self.spacing) if self.spacing is not None else None}


class Canonical:
    """Reorients a volume to RAS+ (a permutation/flip of axes, no interpolation) and back. ``orientation`` keeps the
    file's own axes (nibabel's ``io_orientation`` of its affine: world axis and sign per voxel axis), which the
    out-of-distribution check compares with the training volumes'."""

    def __init__(self, volume: Volume, enabled: bool) -> None:
        self.shape = volume.data.shape
        self.orientation = io_orientation(volume.affine)  # the file's own axes (world axis, sign), before reorienting
        ras = axcodes2ornt("RAS")
        self.to_ras = ornt_transform(self.orientation, ras) if enabled else None
        self.from_ras = ornt_transform(ras, self.orientation) if enabled else None
        self.affine = volume.affine @ nib.orientations.inv_ornt_aff(self.to_ras, self.shape) if enabled else volume.affine

    def forward(self, data: np.ndarray) -> np.ndarray:
        return data if self.to_ras is None else np.ascontiguousarray(apply_orientation(data, self.to_ras))

    def inverse(self, data: np.ndarray) -> np.ndarray:
        return data if self.from_ras is None else np.ascontiguousarray(apply_orientation(data, self.from_ras))


def network_shape(volume: Volume, preprocessing: Preprocessing) -> tuple[int, ...]:
    """The shape of the grid :func:`prepare` puts ``volume`` on (RAS+ order; resampled to ``preprocessing.spacing``
    as torchio does it, ``floor(shape · voxel size / spacing)``), computed without touching the data."""
    canonical = Canonical(volume, preprocessing.canonical)
    shape = list(volume.data.shape)
    if canonical.to_ras is not None:
        for axis, (new_axis, _) in enumerate(canonical.to_ras):
            shape[int(new_axis)] = volume.data.shape[axis]
    if preprocessing.spacing is None:
        return tuple(shape)
    zooms = np.sqrt((np.asarray(canonical.affine)[:3, :3] ** 2).sum(axis=0))
    return tuple(max(1, int(n)) for n in np.floor(np.array(shape) * zooms / np.array(preprocessing.spacing)))


def grid_problem(volume: Volume, preprocessing: Preprocessing) -> str | None:
    """Why resampling ``volume`` to ``preprocessing.spacing`` must not start: a grid of more than
    :data:`medtrans.defaults.MAX_VOXELS` voxels (``None`` when it may)."""
    if preprocessing.spacing is None:
        return None
    shape = network_shape(volume, preprocessing)
    if math.prod(shape) <= MAX_VOXELS:
        return None
    return (f"spacing {'x'.join(f'{s:g}' for s in preprocessing.spacing)} mm would resample {volume.path} "
            f"{tuple(volume.data.shape)} to a grid of {'x'.join(map(str, shape))} = {math.prod(shape):.3g} voxels, over "
            f"the limit of {MAX_VOXELS:.3g} (medtrans.defaults.MAX_VOXELS)")


def _resample(data: np.ndarray, affine: np.ndarray, target: Any, label: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Resample ``data`` (on ``affine``) to a voxel size (a tuple) or onto another image's grid (torchio)."""
    import torchio as tio

    kind = tio.LabelMap if label else tio.ScalarImage
    image = kind(tensor=torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32))[None], affine=affine)
    out = tio.Resample(target)(image)
    return out.data[0].numpy(), out.affine


@dataclass
class Prepared:
    """A volume ready for the network, and what maps a result back.

    Attributes:
        data: the normalised input on the network's grid (RAS+, resampled), float32 ``(X, Y, Z)``.
        mask: the foreground mask on that grid (``None`` when none was given).
        intensity: the source intensity mapping fitted to this volume.
        background: the raw volume's background value (median of its corners).
        source: the raw volume in RAS+ order on its own grid (the back-mapping needs its foreground).
        source_mask: the given mask in RAS+ order on the volume's own grid.
        canonical: the reorientation.
        affine: the network grid's affine.
    """

    data: np.ndarray
    mask: np.ndarray | None
    intensity: AffineIntensity
    background: float
    source: np.ndarray
    source_mask: np.ndarray | None
    canonical: Canonical
    affine: np.ndarray

    @property
    def resampled(self) -> bool:
        return self.data.shape != self.source.shape or not np.allclose(self.affine, self.canonical.affine)

    def to_source_grid(self, data: np.ndarray) -> np.ndarray:
        """A map on the network grid → the RAS+ grid of the source (undoes the resampling, if any)."""
        if not self.resampled:
            return data
        return _resample(data, self.affine, _grid_image(self.source.shape, self.canonical.affine))[0]

    def to_network_grid(self, data: np.ndarray, label: bool = False) -> np.ndarray:
        """A map on the source's RAS+ grid → the network grid (nearest neighbour for labels)."""
        if not self.resampled:
            return data
        return _resample(data, self.canonical.affine, _grid_image(self.data.shape, self.affine), label)[0]


def _grid_image(shape: tuple[int, ...], affine: np.ndarray) -> Any:
    import torchio as tio

    return tio.ScalarImage(tensor=torch.zeros((1, *shape)), affine=affine)


def prepare(volume: Volume, preprocessing: Preprocessing, mask: np.ndarray | None = None) -> Prepared:
    """Reorient, fit and apply the intensity mapping (on the native grid, inside ``mask`` if given), then resample.

    Args:
        volume: a volume from :func:`medtrans.io.read_volume` (already validated).
        preprocessing: the domain's preprocessing.
        mask: optional foreground mask on the volume's grid.

    Raises:
        InputError: naming the file when the intensity mapping cannot be fitted (e.g. an empty mask), or when the
            resampled grid would exceed :data:`medtrans.defaults.MAX_VOXELS` (checked before anything is computed).
    """
    problem = grid_problem(volume, preprocessing)
    if problem is not None:
        raise InputError(volume.path, f"cannot be preprocessed: {problem}")
    canonical = Canonical(volume, preprocessing.canonical)
    source = canonical.forward(volume.data)
    source_mask = canonical.forward(np.asarray(mask) > 0) if mask is not None else None
    try:
        mapping = fit_intensity(preprocessing.intensity, source, source_mask)
    except ValueError as err:
        raise InputError(volume.path, f"cannot fit the source intensity mapping: {err}") from err
    data, affine, grid_mask = mapping.forward(source), canonical.affine, source_mask
    if preprocessing.spacing is not None:
        data, affine = _resample(data, canonical.affine, preprocessing.spacing)
        if source_mask is not None:
            grid_mask = _resample(source_mask.astype(np.float32), canonical.affine,
                                  _grid_image(data.shape, affine), label=True)[0] > 0.5
    return Prepared(np.ascontiguousarray(data, dtype=np.float32), grid_mask, mapping, background_value(volume.data),
                    source, source_mask, canonical, np.asarray(affine, dtype=np.float64))
