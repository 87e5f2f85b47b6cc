"""Whole-volume translation: file → canonical grid → intensity mapping → network → back to the input's geometry.

3D generators run through MONAI's :class:`~monai.inferers.SlidingWindowInferer` (Gaussian blending), or in one pass
when the ROI covers the volume; 2D generators run slice by slice, batched. The output has exactly the input's shape
and affine, float32, in target-domain intensity units.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F
from monai.inferers import SlidingWindowInferer
from tqdm.auto import tqdm

from medtrans import defaults
from medtrans.data.fingerprint import ood_message, ood_report, volume_stats
from medtrans.data.intensity import (
    TARGET_TYPES,
    AffineIntensity,
    background_value,
    foreground_mask,
    histogram_match,
    validate_spec,
)
from medtrans.data.preprocessing import Prepared, grid_problem, prepare
from medtrans.data.start import input_knots
from medtrans.errors import InputError, ModelError
from medtrans.faithfulness import faithfulness_maps, faithfulness_paths
from medtrans.faithfulness_report import report_paths, report_writes
from medtrans.io import (
    Volume,
    atomic_write_many,
    check_outputs,
    check_writable,
    is_nifti,
    nifti_like,
    read_mask,
    read_volume,
)
from medtrans.model import TranslationModel
from medtrans.networks.start import PiecewiseLinear
from medtrans.precision import PRECISION_TYPES, autocast, resolve_precision
from medtrans.utils import resolve_device

__all__ = ["BACKGROUND", "SETTINGS_2D", "SETTINGS_3D", "InferenceSettings", "Translation", "Translator",
           "faithfulness_paths", "gaussian_weights"]

BACKGROUND = -1.0  # normalised value used to pad
logger = logging.getLogger("medtrans.inference")


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
        precision: ``"auto"``, ``"fp32"``, ``"bf16"`` or ``"fp16"`` (see :mod:`medtrans.precision`).
        progress: show progress bars.
    """

    roi_size: tuple[int, int, int] = defaults.ROI_SIZE
    overlap: float = defaults.OVERLAP
    sw_batch_size: int = defaults.SW_BATCH_SIZE
    blend_mode: str = defaults.BLEND_MODES[0]
    slice_axis: int = 2
    batch_size: int = defaults.SLICE_BATCH_SIZE
    device: str = "auto"
    precision: str = defaults.PRECISION
    progress: bool = True

    def __post_init__(self) -> None:
        self.roi_size = tuple(int(r) for r in self.roi_size)
        if len(self.roi_size) != 3 or min(self.roi_size) < 1:
            raise ValueError(f"roi_size needs three positive sides, got {self.roi_size}")
        if not 0 <= self.overlap < 1:
            raise ValueError(f"overlap must lie in [0, 1), got {self.overlap}")
        if self.sw_batch_size < 1 or self.batch_size < 1:
            raise ValueError(f"sw_batch_size and batch_size must be >= 1, got {self.sw_batch_size}, {self.batch_size}")
        if self.blend_mode not in defaults.BLEND_MODES:
            raise ValueError(f"blend_mode must be one of {defaults.BLEND_MODES}, got {self.blend_mode!r}")
        if self.precision not in PRECISION_TYPES:
            raise ValueError(f"precision must be one of {PRECISION_TYPES}, got {self.precision!r}")
        if self.slice_axis not in (0, 1, 2):
            raise ValueError(f"slice_axis must be 0, 1 or 2, got {self.slice_axis}")

    @classmethod
    def for_model(cls, model: TranslationModel, **overrides: Any) -> InferenceSettings:
        """The settings ``model`` was saved with (its ``inference`` record), then ``overrides``.

        Raises:
            ModelError: naming the model's file, when its saved settings are not valid ones.
        """
        try:
            cls(**model.inference)
        except (TypeError, ValueError) as err:
            raise ModelError(model.source, f"record field 'inference' is malformed: {err}") from None
        return cls(**{**model.inference, **overrides})


@dataclass
class Translation:
    """A translated volume in the input's voxel order.

    Attributes:
        output: target-domain intensities.
        source_normalized: the input after the source intensity mapping (network range).
        output_normalized: the network's output (network range).
        maps: faithfulness maps (``ngf``, ``invented``, ``erased``) when asked for.
        ood: how far the input lies from the model's training domain A
            (:func:`~medtrans.data.fingerprint.ood_report`: distances, thresholds, verdict).
    """

    output: np.ndarray
    source_normalized: np.ndarray
    output_normalized: np.ndarray
    maps: dict[str, np.ndarray] = field(default_factory=dict)
    ood: dict[str, Any] = field(default_factory=dict)


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


SETTINGS_3D = ("roi_size", "overlap", "sw_batch_size", "blend_mode")
"""The :class:`InferenceSettings` that apply to 3D models only (the sliding window)."""
SETTINGS_2D = ("slice_axis", "batch_size")
"""The :class:`InferenceSettings` that apply to 2D models only (slice by slice)."""


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
        self.settings = settings or InferenceSettings.for_model(model)
        self.target_intensity = validate_spec(target_intensity or model.target_intensity, TARGET_TYPES)
        self.device = resolve_device(self.settings.device)
        self.network = model.network.to(self.device).eval()
        if model.spatial_dims == 3 and any(r % model.size_divisor for r in self.settings.roi_size):
            raise ModelError(
                model.source, f"roi_size {self.settings.roi_size} must be a multiple of the network's {model.size_divisor}"
            )
        self._reference: Volume | None = None
        self._amp = "fp32"  # resolved per volume by run_network
        self._start_knots: torch.Tensor | None = None  # the input's own, set per volume by translate
        self.last_ood: dict[str, Any] = {}  # the last translated volume's out-of-distribution report

    # -- network passes -------------------------------------------------------------------------------------------
    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        with autocast(self._amp, self.device):
            if self._start_knots is not None:
                return self.network(x, start_knots=self._start_knots).float()
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
        s = self.settings
        if self.model.spatial_dims == 3:
            voxels = math.prod(min(r, v) for r, v in zip(s.roi_size, x.shape[2:])) * s.sw_batch_size
        else:
            voxels = s.batch_size * math.prod(x.shape[2:]) // x.shape[2 + s.slice_axis]
        self._amp = resolve_precision(s.precision, self.device, voxels)
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
    def translate(self, volume: Volume, mask: np.ndarray | None = None, maps: bool = False, maps_eps: float = defaults.FAITHFULNESS_EPS) -> Translation:
        """Translate one volume.

        Args:
            volume: the input (any orientation).
            mask: optional foreground mask on the input's grid (intensity statistics are taken inside it).
            maps: also compute the faithfulness maps.
            maps_eps: their ``ε``.

        An input far from the model's training domain A (:mod:`medtrans.data.fingerprint`) is translated all the same,
        with a one-line warning on the ``medtrans.inference`` logger; the distances are in the result's ``ood``.

        Raises:
            ModelError: when the model expects more than one input channel.
            InputError: when the intensity mapping cannot be fitted to the volume.
        """
        if self.model.in_channels != 1:
            raise ModelError(
                self.model.source, f"expects {self.model.in_channels} input channels but {volume.path} has 1"
            )
        problem = grid_problem(volume, self.model.preprocessing)
        if problem is not None:  # the model's recorded spacing, not the volume, is at fault: refused before resampling
            raise ModelError(self.model.source, f"its preprocessing.{problem}")
        prepared = prepare(volume, self.model.preprocessing, mask)
        self.last_ood = self._ood(prepared, volume.path)
        self._start_knots = self._input_start_knots(prepared.data, volume.path)
        y_net = self.run_network(torch.from_numpy(prepared.data)[None, None])[0, 0].numpy()
        y = prepared.to_source_grid(y_net)
        x = prepared.intensity.forward(prepared.source)
        computed = faithfulness_maps(torch.from_numpy(x)[None, None], torch.from_numpy(y)[None, None], maps_eps) if maps else {}
        inverse = prepared.canonical.inverse
        return Translation(
            output=inverse(self._to_target(y, prepared)),
            source_normalized=inverse(x),
            output_normalized=inverse(y),
            maps={k: inverse(v[0, 0].numpy()) for k, v in computed.items()},
            ood=self.last_ood,
        )

    def _ood(self, prepared: Prepared, path: Path) -> dict[str, Any]:
        """The input measured against the model's training fingerprint; one warning line when it is far."""
        if not self.model.fingerprint:
            return ood_report({}, {})
        report = ood_report(self.model.fingerprint, volume_stats(prepared))
        if report["out_of_distribution"]:
            logger.warning("medtrans: warning: %s looks unlike the training data (%s)", path, ood_message(report))
        return report

    def _input_start_knots(self, image: np.ndarray, path: Path) -> torch.Tensor | None:
        """The knots a started generator's mapping runs from for ``image`` (normalised canonical voxels): the input's
        own foreground quantiles (:func:`~medtrans.data.start.input_knots`), onto the same domain-B values; ``None``
        for a generator without a start."""
        start = getattr(self.network, "start", None)
        if not isinstance(start, PiecewiseLinear) or self.model.start.get("type", "none") == "none":
            return None
        try:
            return torch.as_tensor(input_knots(image, start.knots.numel()), dtype=torch.float32, device=self.device)
        except ValueError as error:
            raise InputError(path, str(error)) from None

    def _to_target(self, y: np.ndarray, prepared: Prepared) -> np.ndarray:
        """Network range → target units; where the input is background, the target domain's background value."""
        kind, source = self.target_intensity["type"], prepared.source
        if kind == "source":
            out, background = prepared.intensity.inverse(y), background_value(source)
        elif kind == "window":
            spec = self.target_intensity
            out = AffineIntensity.from_range(float(spec["low"]), float(spec["high"])).inverse(y)
            background = spec.get("background")
        else:
            if self._reference is None:
                self._reference = read_volume(self.target_intensity["reference"])
            out = histogram_match(y, self._reference.data, mask=foreground_mask(source, prepared.source_mask))
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
        maps_eps: float = defaults.FAITHFULNESS_EPS,
        ood_report_path: str | Path | None = None,
        faithfulness_report: str | Path | None = None,
        calibration: Mapping[str, Any] | None = None,
    ) -> Path:
        """Read, translate and write one volume, its faithfulness maps, its out-of-distribution report (the JSON
        of :attr:`Translation.ood`, at ``ood_report_path`` when given) and its faithfulness report (regions of
        invented or erased structure, :mod:`medtrans.faithfulness_report`, with ``calibration``; a montage beside
        it): all of them, or (on any failure or interruption) none.

        Raises:
            InputError: for a bad input, mask or output path (checked before any computation), or an output that
                would overwrite an input or another output.
            ModelError: for a model that does not fit the input.
        """
        output_path = check_writable(output_path)
        if not is_nifti(output_path):
            raise InputError(output_path, "output must be a .nii or .nii.gz file name")
        map_paths = faithfulness_paths(faithfulness_map) if faithfulness_map is not None else {}
        extra = [*((p, "--faithfulness-map") for p in map_paths.values())]
        extra += [(Path(ood_report_path), "OUTPUT")] if ood_report_path is not None else []
        if faithfulness_report is not None:
            extra += [(p, "--faithfulness-report") for p in report_paths(faithfulness_report).values()]
        for p, _ in extra:
            check_writable(p)
        check_outputs([(output_path, "OUTPUT"), *extra], [(input_path, "INPUT"), (mask_path, "--mask"), *self._reads()])
        if mask_path is not None and not Path(mask_path).exists():
            raise InputError(mask_path, "--mask does not exist")
        volume = read_volume(input_path)
        mask = read_mask(mask_path, volume) if mask_path is not None else None
        result = self.translate(volume, mask, maps=bool(map_paths), maps_eps=maps_eps)
        maps = [(p, result.maps[name], f"medtrans faithfulness {name} eps={maps_eps}") for name, p in map_paths.items()]
        images = [(p, nifti_like(data, volume, text)) for p, data, text in [*maps, (output_path, result.output,
                                                                                    "medtrans translation")]]
        writes = [(p, lambda tmp, image=image: nib.save(image, tmp)) for p, image in images]
        if faithfulness_report is not None:
            writes += report_writes(faithfulness_report, result.source_normalized, result.output_normalized,
                                    foreground_mask(volume.data, mask), volume.affine, calibration,
                                    {"input": str(input_path), "output": str(output_path)})[0]
        if ood_report_path is not None:
            text = json.dumps({"input": str(input_path), "output": str(output_path), "model": str(self.model.source),
                               **result.ood}, indent=1)
            writes.insert(0, (ood_report_path, lambda tmp: Path(tmp).write_text(text + "\n")))
        return atomic_write_many(writes)[-1]

    def _reads(self) -> list[tuple[Path | None, str]]:
        """The files this translator reads besides its input: the model and the histogram reference."""
        return _model_reads(self.model, self.target_intensity)


def _model_reads(model: TranslationModel | str | Path, target_intensity: Mapping[str, Any] | None
                 ) -> list[tuple[Path | None, str]]:
    """``(path, option)`` of the files a translation reads besides its input and mask: the model (a checkpoint or a
    bundle folder) and the reference volume of histogram matching."""
    source = model.source if isinstance(model, TranslationModel) else Path(model)
    target = target_intensity or (model.target_intensity if isinstance(model, TranslationModel) else None) or {}
    reference = target.get("reference") if target.get("type") == "histogram" else None
    return [(source if source.exists() else None, "--model"),
            (Path(reference) if reference else None, "--reference")]
