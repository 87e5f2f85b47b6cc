"""Whole-volume translation: file → canonical grid → intensity mapping → network → back to the input's geometry.

3D generators run through MONAI's :class:`~monai.inferers.SlidingWindowInferer` (Gaussian blending), or in one pass
when the ROI covers the volume; 2D generators run slice by slice, batched. The output has exactly the input's shape
and affine, float32, in target-domain intensity units.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F
import torchio as tio
from monai.inferers import SlidingWindowInferer
from nibabel.orientations import apply_orientation, axcodes2ornt, io_orientation, ornt_transform
from tqdm.auto import tqdm

from medtrans.data.intensity import (
    TARGET_TYPES,
    AffineIntensity,
    background_value,
    fit_intensity,
    foreground_mask,
    histogram_match,
    validate_spec,
)
from medtrans.errors import InputError, MedtransError, ModelError
from medtrans.faithfulness import faithfulness_maps
from medtrans.io import Volume, check_writable, is_dicom_dir, is_nifti, read_volume, write_volume
from medtrans.model import TranslationModel, load_model
from medtrans.utils import resolve_device

__all__ = [
    "InferenceSettings",
    "translate_path",
    "Translation",
    "Translator",
    "faithfulness_paths",
    "gaussian_weights",
    "list_inputs",
    "register",
]

PRECISIONS = {"auto": None, "fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
BACKGROUND = -1.0  # normalised value used to pad


@dataclass
class InferenceSettings:
    """How a volume is pushed through the network.

    Attributes:
        roi_size: 3D window; a window at least as large as the volume runs it in one pass (padded to the network's
            size divisor). Sides must be multiples of the network's size divisor.
        overlap: fraction of window overlap.
        sw_batch_size: windows per forward pass.
        blend_mode: ``"gaussian"`` or ``"constant"``.
        slice_axis: axis of the canonical (RAS) volume that 2D models slice along (2 = axial).
        batch_size: slices per forward pass for 2D models.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
        precision: ``"auto"`` (bf16 autocast on CUDA where supported, else fp16; fp32 on CPU), ``"fp32"``,
            ``"bf16"`` or ``"fp16"`` (autocast).
        progress: show progress bars.
    """

    roi_size: tuple[int, int, int] = (64, 64, 64)
    overlap: float = 0.25
    sw_batch_size: int = 1
    blend_mode: str = "gaussian"
    slice_axis: int = 2
    batch_size: int = 16
    device: str = "auto"
    precision: str = "auto"
    progress: bool = True

    def __post_init__(self) -> None:
        self.roi_size = tuple(int(r) for r in self.roi_size)
        if len(self.roi_size) != 3 or min(self.roi_size) < 1:
            raise ValueError(f"roi_size needs three positive sides, got {self.roi_size}")
        if not 0 <= self.overlap < 1:
            raise ValueError(f"overlap must lie in [0, 1), got {self.overlap}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {tuple(PRECISIONS)}, got {self.precision!r}")
        if self.slice_axis not in (0, 1, 2):
            raise ValueError(f"slice_axis must be 0, 1 or 2, got {self.slice_axis}")


@dataclass
class Translation:
    """A translated volume in the input's voxel order.

    Attributes:
        output: target-domain intensities.
        source_normalized: the input after the source intensity mapping (network range).
        output_normalized: the network's output (network range).
        maps: faithfulness maps (``ngf``, ``invented``, ``erased``) when asked for.
    """

    output: np.ndarray
    source_normalized: np.ndarray
    output_normalized: np.ndarray
    maps: dict[str, np.ndarray] = field(default_factory=dict)


def gaussian_weights(roi_size: tuple[int, ...], sigma_scale: float = 0.125) -> torch.Tensor:
    """Separable Gaussian window weights ``(1, 1, *roi_size)``, peak 1, *not* clamped.

    MONAI's own Gaussian map is clamped below at 1e-3; in 3D the product weights fall below that over much of a
    window, so window-edge voxels (where zero padding corrupts the network's output) get up to ~40% of the blend near
    the volume faces and several percent inside. Unclamped weights keep sliding-window output within ~1e-3 of a full
    pass at overlap 0.5 (see tests/test_inference.py).
    """
    weights = torch.ones((1, 1, *roi_size), dtype=torch.float64)
    for axis, size in enumerate(roi_size):
        centred = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
        shape = [1] * (2 + len(roi_size))
        shape[2 + axis] = size
        weights = weights * torch.exp(-0.5 * (centred / (sigma_scale * size)) ** 2).view(shape)
    return (weights / weights.max()).float()


class _Canonical:
    """Reorients a volume to RAS+ (a permutation/flip of axes, no interpolation) and back."""

    def __init__(self, volume: Volume, enabled: bool) -> None:
        self.shape = volume.data.shape
        own = io_orientation(volume.affine)
        ras = axcodes2ornt("RAS")
        self.to_ras = ornt_transform(own, ras) if enabled else None
        self.from_ras = ornt_transform(ras, own) if enabled else None
        self.affine = volume.affine @ nib.orientations.inv_ornt_aff(self.to_ras, self.shape) if enabled else volume.affine

    def forward(self, data: np.ndarray) -> np.ndarray:
        return data if self.to_ras is None else np.ascontiguousarray(apply_orientation(data, self.to_ras))

    def inverse(self, data: np.ndarray) -> np.ndarray:
        return data if self.from_ras is None else np.ascontiguousarray(apply_orientation(data, self.from_ras))


class Translator:
    """Applies a :class:`~medtrans.model.TranslationModel` to whole volumes.

    Args:
        model: the loaded generator and its intensity mappings.
        settings: inference settings (defaults: the model's saved ``inference`` values, then
            :class:`InferenceSettings`'s).
        target_intensity: override of the model's target spec (``window``, ``source`` or ``histogram``).

    Raises:
        ModelError: when the model is not single-channel or the ROI does not fit its size divisor.
    """

    def __init__(
        self,
        model: TranslationModel,
        settings: InferenceSettings | None = None,
        target_intensity: dict[str, Any] | None = None,
    ) -> None:
        self.model = model
        self.settings = settings or InferenceSettings(**model.inference)
        self.target_intensity = validate_spec(target_intensity or model.target_intensity, TARGET_TYPES)
        self.device = resolve_device(self.settings.device)
        self.network = model.network.to(self.device).eval()
        if model.spatial_dims == 3 and any(r % model.size_divisor for r in self.settings.roi_size):
            raise ModelError(
                model.source, f"roi_size {self.settings.roi_size} must be a multiple of the network's {model.size_divisor}"
            )
        self._reference: Volume | None = None

    # -- network passes -------------------------------------------------------------------------------------------
    def _autocast(self) -> contextlib.AbstractContextManager:
        dtype = PRECISIONS[self.settings.precision]
        if self.settings.precision == "auto" and self.device.type == "cuda":
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=dtype)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        with self._autocast():
            return self.network(x).float()

    def _padded_forward(self, x: torch.Tensor) -> torch.Tensor:
        """One pass on ``x`` padded (with background) to the network's size divisor, cropped back."""
        div = self.model.size_divisor
        spatial = x.shape[2:]
        pad = [p for s in reversed(spatial) for p in (0, (-s) % div)]
        y = self._forward(F.pad(x, pad, value=BACKGROUND))
        return y[(..., *(slice(0, s) for s in spatial))]

    def run_network(self, x: torch.Tensor) -> torch.Tensor:
        """Translate a normalised canonical volume ``(1, 1, X, Y, Z)`` (on any device) into the network range."""
        with torch.inference_mode():
            if self.model.spatial_dims == 3:
                return self._run_3d(x)
            return self._run_2d(x)

    def _run_3d(self, x: torch.Tensor) -> torch.Tensor:
        s = self.settings
        if all(r >= v for r, v in zip(s.roi_size, x.shape[2:])):
            return self._padded_forward(x.to(self.device)).cpu()
        inferer = SlidingWindowInferer(
            roi_size=s.roi_size,
            sw_batch_size=s.sw_batch_size,
            overlap=s.overlap,
            mode=s.blend_mode,
            padding_mode="constant",
            cval=BACKGROUND,
            sw_device=self.device,
            device=torch.device("cpu"),
            progress=s.progress,
        )
        if s.blend_mode == "gaussian" and all(v >= r for r, v in zip(s.roi_size, x.shape[2:])):
            inferer.roi_weight_map = gaussian_weights(s.roi_size)  # MONAI uses it as given (no 1e-3 clamp)
        return inferer(x.cpu(), self._forward)

    def _run_2d(self, x: torch.Tensor) -> torch.Tensor:
        axis = 2 + self.settings.slice_axis
        slices = x.movedim(axis, 2)[0, 0]  # (N, H, W)
        out = torch.empty_like(slices)
        batches = range(0, slices.shape[0], self.settings.batch_size)
        for start in tqdm(batches, desc="slices", disable=not self.settings.progress, leave=False):
            chunk = slices[start : start + self.settings.batch_size, None].to(self.device)
            out[start : start + chunk.shape[0]] = self._padded_forward(chunk)[:, 0].cpu()
        return out[None, None].movedim(2, axis)

    # -- whole volumes --------------------------------------------------------------------------------------------
    def translate(self, volume: Volume, mask: np.ndarray | None = None, maps: bool = False, maps_eps: float = 0.15) -> Translation:
        """Translate one volume.

        Args:
            volume: the input (any orientation).
            mask: optional foreground mask on the input's grid (intensity statistics are taken inside it).
            maps: also compute the faithfulness maps.
            maps_eps: their ``ε``.

        Raises:
            ModelError: when the model expects more than one input channel.
            InputError: when the intensity mapping cannot be fitted to the volume.
        """
        if self.model.in_channels != 1:
            raise ModelError(
                self.model.source, f"expects {self.model.in_channels} input channels but {volume.path} has 1"
            )
        pre = self.model.preprocessing
        canon = _Canonical(volume, pre.canonical)
        data = canon.forward(volume.data)
        try:
            source_map = fit_intensity(pre.intensity, data, None if mask is None else canon.forward(mask))
        except ValueError as err:
            raise InputError(volume.path, f"cannot fit the source intensity mapping: {err}") from err
        x = torch.from_numpy(source_map.forward(data))[None, None]
        resample_back = None
        if pre.spacing is not None:
            image = tio.ScalarImage(tensor=x[0], affine=canon.affine)
            resampled = tio.Resample(pre.spacing)(image)
            x = resampled.data[None]
            resample_back = image
        y = self.run_network(x)
        if resample_back is not None:
            back = tio.Resample(resample_back)(tio.ScalarImage(tensor=y[0], affine=resampled.affine))
            y = back.data[None]
            x = resample_back.data[None]
        computed = faithfulness_maps(x, y, maps_eps) if maps else {}
        y_norm = y[0, 0].numpy()
        target = self._to_target(y_norm, source_map, data, None if mask is None else canon.forward(mask))
        return Translation(
            output=canon.inverse(target),
            source_normalized=canon.inverse(x[0, 0].numpy()),
            output_normalized=canon.inverse(y_norm),
            maps={k: canon.inverse(v[0, 0].numpy()) for k, v in computed.items()},
        )

    def _to_target(self, y: np.ndarray, source_map: AffineIntensity, source: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
        """Network range → target units; where the input is background, the target domain's background value."""
        kind = self.target_intensity["type"]
        if kind == "source":
            out, background = source_map.inverse(y), background_value(source)
        elif kind == "window":
            spec = self.target_intensity
            out = AffineIntensity.from_range(float(spec["low"]), float(spec["high"])).inverse(y)
            background = spec.get("background")
        else:
            if self._reference is None:
                self._reference = read_volume(self.target_intensity["reference"])
            out = histogram_match(y, self._reference.data, mask=foreground_mask(source, mask))
            background = background_value(self._reference.data)
        if background is not None:
            out = np.where(foreground_mask(source), out, np.float32(background))
        return out.astype(np.float32)

    def translate_file(
        self,
        input_path: str | Path,
        output_path: str | Path,
        faithfulness_map: str | Path | None = None,
        mask_path: str | Path | None = None,
        maps_eps: float = 0.15,
    ) -> Path:
        """Read, translate and write one volume (and its faithfulness maps), atomically.

        Raises:
            InputError: for a bad input, mask or output path (checked before any computation).
            ModelError: for a model that does not fit the input.
        """
        output_path = check_writable(output_path)
        if not is_nifti(output_path):
            raise InputError(output_path, "output must be a .nii or .nii.gz file name")
        map_paths = faithfulness_paths(faithfulness_map) if faithfulness_map is not None else {}
        for p in map_paths.values():
            check_writable(p)
        volume = read_volume(input_path)
        mask = None
        if mask_path is not None:
            mask_volume = read_volume(mask_path, allow_constant=True)
            if mask_volume.data.shape != volume.data.shape or not np.allclose(mask_volume.affine, volume.affine, atol=1e-3):
                raise InputError(mask_path, f"mask grid differs from the image {volume.path}")
            mask = mask_volume.data > 0
        result = self.translate(volume, mask, maps=bool(map_paths), maps_eps=maps_eps)
        for name, p in map_paths.items():
            write_volume(p, result.maps[name], volume, f"medtrans faithfulness {name} eps={maps_eps}")
        return write_volume(output_path, result.output, volume, "medtrans translation")


def faithfulness_paths(path: str | Path) -> dict[str, Path]:
    """``PATH`` holds the NGF map; ``<stem>_invented`` and ``<stem>_erased`` sit beside it."""
    path = Path(path)
    name = path.name
    suffix = ".nii.gz" if name.lower().endswith(".nii.gz") else (".nii" if name.lower().endswith(".nii") else "")
    if not suffix:
        raise InputError(path, "faithfulness map must be a .nii or .nii.gz file name")
    stem = name[: -len(suffix)]
    return {
        "ngf": path,
        "invented": path.with_name(f"{stem}_invented{suffix}"),
        "erased": path.with_name(f"{stem}_erased{suffix}"),
    }


def list_inputs(path: str | Path) -> list[Path]:
    """The volumes to translate: one file, one DICOM-series folder, or the NIfTI files and DICOM series in a folder.

    Raises:
        InputError: if the path does not exist or a folder holds nothing to translate.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, "does not exist")
    if path.is_file() or is_dicom_dir(path):
        return [path]
    found = sorted(p for p in path.iterdir() if (p.is_file() and is_nifti(p)) or (p.is_dir() and is_dicom_dir(p)))
    if not found:
        raise InputError(path, "input folder holds no NIfTI file or DICOM series")
    return found


def _output_name(path: Path) -> str:
    return path.name if is_nifti(path) else f"{path.name}.nii.gz"


def _pairs(inputs: list[Path], single: bool, output: Path) -> Iterator[tuple[Path, Path]]:
    if single:
        yield inputs[0], output
        return
    if output.exists() and not output.is_dir():
        raise InputError(output, "input is a folder, so the output must be a folder")
    if not output.exists():
        if not output.parent.is_dir():
            raise InputError(output, f"output folder's parent {output.parent} does not exist")
        output.mkdir()
    for p in inputs:
        yield p, output / _output_name(p)


# -- command line -----------------------------------------------------------------------------------------------------
def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``medtrans translate``."""
    p = subparsers.add_parser(
        "translate",
        help="translate NIfTI volumes / DICOM series with a trained model",
        description=(
            "Translate whole volumes with a medtrans model. The output has exactly the input's shape and affine "
            "(orientation, spacing, origin), float32, in target-domain intensities. 3D models run by sliding window "
            "(Gaussian blending) or in one pass when --roi-size covers the volume; 2D models run slice by slice."
        ),
    )
    p.add_argument("input", type=Path, help="a .nii/.nii.gz file, a DICOM series folder, or a folder of them")
    p.add_argument("output", type=Path, help="output .nii/.nii.gz file (a folder when INPUT is a folder)")
    p.add_argument("--model", type=Path, required=True, help="medtrans checkpoint (.pt) or bundle folder")
    p.add_argument("--mask", type=Path, help="foreground mask on the input's grid for the intensity statistics")
    p.add_argument("--roi-size", type=int, nargs=3, metavar=("X", "Y", "Z"), help="3D window (default: the model's, else 64 64 64); larger than the volume = one pass")
    p.add_argument("--overlap", type=float, help="sliding-window overlap fraction (default 0.25)")
    p.add_argument("--sw-batch-size", type=int, help="windows per forward pass (default 1)")
    p.add_argument("--blend-mode", choices=("gaussian", "constant"), help="window blending (default gaussian)")
    p.add_argument("--slice-axis", type=int, choices=(0, 1, 2), help="2D models: axis of the RAS volume to slice (2 = axial)")
    p.add_argument("--batch-size", type=int, help="2D models: slices per forward pass (default 16)")
    p.add_argument("--device", default=None, help="auto (default), cpu, cuda, cuda:N")
    p.add_argument("--precision", choices=tuple(PRECISIONS), help="autocast precision: auto (default: AMP on CUDA, fp32 on CPU), fp32, bf16 (~2x faster on CPUs with avx512_bf16), fp16")
    p.add_argument(
        "--target-intensity",
        choices=("model", "source", "histogram", "window"),
        default="model",
        help="map outputs back with the model's recorded target range (default), the input's own mapping, "
        "histogram matching to --reference, or --window LOW HIGH",
    )
    p.add_argument("--reference", type=Path, help="reference target-domain volume for --target-intensity histogram")
    p.add_argument("--window", type=float, nargs=2, metavar=("LOW", "HIGH"), help="target range for --target-intensity window")
    p.add_argument(
        "--faithfulness-map",
        type=Path,
        help="also write the per-voxel NGF alignment map 1-½<n(s),n(o)>² here, with <stem>_invented and <stem>_erased "
        "beside it (edges the output added / lost); a folder when INPUT is a folder. See docs/inference.md",
    )
    p.add_argument("--faithfulness-eps", type=float, default=0.15, help="ε of the faithfulness maps, normalised units (0.15)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=run_translate)


def _target_spec(args: argparse.Namespace) -> dict[str, Any] | None:
    if args.target_intensity == "model":
        return None
    if args.target_intensity == "histogram":
        if args.reference is None:
            raise InputError("--reference", "--target-intensity histogram needs --reference FILE")
        read_volume(args.reference)
        return {"type": "histogram", "reference": str(args.reference)}
    if args.target_intensity == "window":
        if args.window is None:
            raise InputError("--window", "--target-intensity window needs --window LOW HIGH")
        return {"type": "window", "low": args.window[0], "high": args.window[1]}
    return {"type": "source"}


def translate_path(
    input_path: str | Path,
    output_path: str | Path,
    model: str | Path | TranslationModel,
    faithfulness_map: str | Path | None = None,
    mask: str | Path | None = None,
    target_intensity: dict[str, Any] | None = None,
    faithfulness_eps: float = 0.15,
    **settings: Any,
) -> list[Path]:
    """Translate a file, a DICOM series folder, or every volume of a folder (then ``output_path`` is a folder).

    Args:
        input_path: what to translate.
        output_path: output file, or folder for a folder input.
        model: a loaded model, or a checkpoint / bundle path.
        faithfulness_map: also write faithfulness maps (a folder for a folder input).
        mask: foreground mask for the intensity statistics (single input).
        target_intensity: override of the model's back-mapping.
        faithfulness_eps: ε of the maps.
        **settings: :class:`InferenceSettings` fields (override the model's saved defaults).

    Returns:
        the written outputs.

    Raises:
        MedtransError: for bad inputs or models; for a folder, after trying every volume, listing those that failed.
    """
    model = model if isinstance(model, TranslationModel) else load_model(model)
    translator = Translator(model, InferenceSettings(**{**model.inference, **settings}), target_intensity)
    input_path, output_path = Path(input_path), Path(output_path)
    inputs = list_inputs(input_path)
    single = inputs == [input_path]  # a file or one DICOM series, not a folder of volumes
    pairs = list(_pairs(inputs, single, output_path))
    maps_dir = None
    if faithfulness_map is not None and not single:
        maps_dir = Path(faithfulness_map)
        maps_dir.mkdir(exist_ok=True)
    failures, written = [], []
    progress = translator.settings.progress and len(pairs) > 1
    for src, dst in tqdm(pairs, desc="volumes", disable=not progress):
        fmap = faithfulness_map if maps_dir is None else maps_dir / _output_name(src)
        try:
            written.append(translator.translate_file(src, dst, fmap, mask, faithfulness_eps))
        except InputError as err:
            if single:
                raise
            failures.append(str(err))
            tqdm.write(f"medtrans: skipped {err}")
    if failures:
        raise MedtransError(f"{len(failures)} of {len(pairs)} volumes failed:\n  " + "\n  ".join(failures))
    return written


def run_translate(args: argparse.Namespace) -> int:
    """Body of ``medtrans translate``; returns the exit status."""
    settings = {name: getattr(args, name) for name in
                ("roi_size", "overlap", "sw_batch_size", "blend_mode", "slice_axis", "batch_size", "device", "precision")
                if getattr(args, name) is not None}
    translate_path(args.input, args.output, args.model, args.faithfulness_map, args.mask, _target_spec(args),
                   args.faithfulness_eps, progress=not args.no_progress, **settings)
    return 0
