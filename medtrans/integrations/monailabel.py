"""Serve medtrans translators from MONAI Label as image-to-image tasks.

MONAI Label's tasks assume segmentation; a translation is different in two ways this module takes care of: the result
is a float32 intensity image (never cast to a label dtype) and it goes through exactly the pipeline of
``medtrans translate`` (:meth:`medtrans.inference.Translator.translate_file`: canonical orientation, the model's
intensity mapping, sliding window or slice-wise network, back-mapping, the input's geometry), so a result served over
REST equals the command-line result on the same file.

Needs the ``monailabel`` package, which pins numpy 1.x and older DICOM libraries: install it in its own environment
(``bash run.sh label ...`` builds ``.venv-label``; see docs/monailabel.md). Nothing here is imported by the rest of
medtrans.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from fastapi import HTTPException
from monailabel.interfaces.tasks.infer_v2 import InferTask, InferType

from medtrans.defaults import BLEND_MODES, FAITHFULNESS_EPS, PRECISION_TYPES
from medtrans.errors import MedtransError, ModelError
from medtrans.inference import (
    SETTINGS_2D,
    SETTINGS_3D,
    InferenceSettings,
    Translator,
    faithfulness_paths,
)
from medtrans.model import TranslationModel, load_model

__all__ = ["RESULT_TYPES", "TranslationInferTask", "find_models"]

RESULT_TYPES = ("translation", "invented", "erased", "ngf")
"""What an /infer call returns: the translated volume, or one of its faithfulness maps (docs/inference.md)."""

_NIFTI = (".nii.gz", ".nii")
_SLICER_HINT = (
    "a translation is a float32 intensity image, returned as NIfTI; 3D Slicer's MONAILabel module asks for uint8 "
    ".nrrd label maps, which would destroy it. Ask for result_dtype float32 and result_extension .nii.gz (see "
    "medtrans docs/monailabel.md, '3D Slicer')"
)


def find_models(app_dir: str | Path, models: str | None) -> dict[str, Path]:
    """Resolve an app's ``--conf models`` value to named model paths.

    Args:
        app_dir: the MONAI Label app folder; models are looked up in its ``model/`` folder.
        models: comma-separated names (``<app>/model/<name>``, ``<name>.pt`` or a bundle folder of that name) or
            paths to checkpoints / bundle folders; ``None`` or ``"all"`` serves everything in ``<app>/model/``.

    Returns:
        ``{name: path}`` in the order given.

    Raises:
        ModelError: when a named model does not exist, or nothing is found to serve.
    """
    folder = Path(app_dir) / "model"
    if models in (None, "", "all"):
        found = sorted(p for p in folder.glob("*") if p.suffix == ".pt" or (p / "configs").is_dir()) if folder.is_dir() else []
        if not found:
            raise ModelError(folder, "no model to serve: put a medtrans checkpoint (.pt) or bundle folder here, or "
                                     "pass --conf models PATH")
        return {p.stem: p for p in found}
    resolved = {}
    for item in (m.strip() for m in models.split(",") if m.strip()):
        candidates = [Path(item), folder / item, folder / f"{item}.pt"]
        path = next((c for c in candidates if c.exists()), None)
        if path is None:
            raise ModelError(item, f"model not found (looked for {', '.join(str(c) for c in candidates)})")
        resolved[path.stem if path.suffix == ".pt" else path.name] = path
    return resolved


def _choice(value: Any) -> Any:
    """A config entry's default: MONAI Label clients show a list as a choice whose first item is the default."""
    return value[0] if isinstance(value, list) else value


def _parse_roi(value: Any) -> tuple[int, ...]:
    """``[96, 96, 96]``, ``"96,96,96"`` or ``"96 96 96"`` → a tuple of ints."""
    if isinstance(value, str):
        value = value.replace(",", " ").split()
    return tuple(int(v) for v in value)


class TranslationInferTask(InferTask):
    """One medtrans model as a MONAI Label infer task of type ``others``.

    The request's image (a datastore image, an uploaded file or a DICOM series folder) is translated by
    :meth:`Translator.translate_file` and returned as a float32 NIfTI with the input's shape and affine. Parameters a
    client may set in the request (shown under the model's ``config`` in ``/info``): ``roi_size``, ``overlap``,
    ``sw_batch_size`` (3D models), ``batch_size``, ``slice_axis`` (2D models), ``device``, ``precision``,
    ``result_type`` (``translation`` or a faithfulness map: ``invented``, ``erased``, ``ngf``),
    ``faithfulness_eps`` and ``faithfulness_report`` (true: the regions of invented or erased structure, with the
    built-in calibration, in the JSON under ``medtrans.faithfulness_report``). Requests run one at a time per task (a lock), so memory stays one volume's worth.

    Args:
        model: a loaded model, or a checkpoint / bundle path.
        description: shown to clients; defaults to one naming the model.

    Raises:
        ModelError: when the model cannot be loaded.
    """

    def __init__(self, model: TranslationModel | str | Path, description: str | None = None) -> None:
        self.model = model if isinstance(model, TranslationModel) else load_model(model)
        defaults = InferenceSettings.for_model(self.model, progress=False)
        keys = SETTINGS_3D if self.model.spatial_dims == 3 else SETTINGS_2D
        # roi_size as "X,Y,Z": clients show a list as a choice between its items; blend_mode a choice, the default first
        shown = {"roi_size": ",".join(map(str, defaults.roi_size)),
                 "blend_mode": sorted(BLEND_MODES, key=lambda mode: mode != defaults.blend_mode)}
        config: dict[str, Any] = {k: shown.get(k, getattr(defaults, k)) for k in keys}
        config.update({
            "device": ["auto", "cpu", "cuda"],
            "precision": list(PRECISION_TYPES),
            "result_type": list(RESULT_TYPES),
            "faithfulness_eps": FAITHFULNESS_EPS,
            "faithfulness_report": False,
        })
        super().__init__(
            type=InferType.OTHERS,
            labels=None,
            dimension=self.model.spatial_dims,
            description=description or f"medtrans {self.model.spatial_dims}D translation ({self.model.source.name})",
            config=config,
        )
        self._lock = threading.Lock()

    def is_valid(self) -> bool:
        return True

    def _request_settings(self, request: dict[str, Any]) -> tuple[InferenceSettings, str, float, bool]:
        values = {k: request.get(k, _choice(v)) for k, v in self.config().items()}
        report = values.pop("faithfulness_report")
        if str(report).lower() not in ("true", "false", "1", "0"):
            raise ValueError(f"faithfulness_report must be true or false, got {report!r}")
        result_type = str(values.pop("result_type"))
        if result_type not in RESULT_TYPES:
            raise ValueError(f"result_type must be one of {RESULT_TYPES}, got {result_type!r}")
        eps = float(values.pop("faithfulness_eps"))
        if "roi_size" in values:
            values["roi_size"] = _parse_roi(values["roi_size"])
        for key, kind in (("overlap", float), ("sw_batch_size", int), ("batch_size", int), ("slice_axis", int)):
            if key in values:
                values[key] = kind(values[key])
        dtype, extension = request.get("result_dtype"), request.get("result_extension")
        if dtype not in (None, "", "float32") or extension not in (None, "", *_NIFTI):
            raise ValueError(f"cannot return result_dtype={dtype!r} result_extension={extension!r}: {_SLICER_HINT}")
        settings = InferenceSettings.for_model(self.model, **values, progress=False)
        return settings, result_type, eps, str(report).lower() in ("true", "1")

    def __call__(self, request: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """Translate ``request["image"]``; returns the result file (the server deletes it after sending) and JSON.

        Raises:
            HTTPException: 422 with the reason for bad parameters or an unreadable / unsuitable image.
        """
        start = time.perf_counter()
        image = request.get("image")
        if not isinstance(image, str) or not image:
            raise HTTPException(status_code=422, detail="medtrans: the request has no image path")
        try:
            settings, result_type, eps, want_report = self._request_settings(request)
        except (TypeError, ValueError) as err:
            raise HTTPException(status_code=422, detail=f"medtrans: bad parameter: {err}") from err
        suffix = ".nii" if request.get("result_extension") == ".nii" else ".nii.gz"
        fd, result = tempfile.mkstemp(prefix="medtrans_", suffix=suffix)
        os.close(fd)
        try:
            with self._lock, tempfile.TemporaryDirectory(prefix="medtrans_") as tmp:
                translator = Translator(self.model, settings)
                report = Path(tmp) / "report.json" if want_report else None
                if result_type == "translation":
                    translator.translate_file(image, result, faithfulness_report=report)
                else:
                    maps = Path(tmp) / f"map{suffix}"
                    translator.translate_file(image, Path(tmp) / f"translation{suffix}", maps, maps_eps=eps,
                                              faithfulness_report=report)
                    os.replace(faithfulness_paths(maps)[result_type], result)
                regions = json.loads(report.read_text()) if report is not None else None
        except MedtransError as err:
            os.unlink(result)
            raise HTTPException(status_code=422, detail=f"medtrans: cannot translate the input image: {err}") from err
        except BaseException:
            os.unlink(result)
            raise
        return result, {
            "medtrans": {
                "model": str(self.model.source),
                "result_type": result_type,
                "dtype": "float32",
                "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(settings).items()},
                "seconds": round(time.perf_counter() - start, 3),
                "ood": translator.last_ood,  # the input against the training fingerprint (docs/inference.md)
                **({"faithfulness_report": {k: regions[k] for k in ("regions", "calibration")}} if regions else {}),
            }
        }
