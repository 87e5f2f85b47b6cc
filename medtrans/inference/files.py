"""Translating files and folders: every output path checked before anything is read, the model loaded once, the
volumes translated one by one (a folder's bad volumes listed at the end, the others written)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from medtrans import defaults
from medtrans.data.fingerprint import ood_path
from medtrans.errors import InputError, MedtransError
from medtrans.faithfulness_report import load_calibration, report_paths
from medtrans.inference.translator import (
    InferenceSettings,
    Translator,
    _model_reads,
    faithfulness_paths,
)
from medtrans.io import (
    check_input,
    check_outputs,
    check_writable,
    is_dicom_dir,
    is_nifti,
    list_folder,
)
from medtrans.model import TranslationModel, load_model

__all__ = ["list_inputs", "translate_path"]


def list_inputs(path: str | Path) -> list[Path]:
    """The volumes to translate: one file, one DICOM-series folder, or the NIfTI files and DICOM series in a folder.

    Raises:
        InputError: if the path does not exist, is neither a file nor a folder (a FIFO, a device), is a folder that
            cannot be listed, or is a folder that holds nothing to translate.
    """
    path = check_input(path)
    if path.is_file() or is_dicom_dir(path):
        return [path]
    found = [p for p in list_folder(path) if (p.is_file() and is_nifti(p)) or (p.is_dir() and is_dicom_dir(p))]
    if not found:
        raise InputError(path, "input folder holds no NIfTI file or DICOM series")
    return found


def _output_name(path: Path) -> str:
    return path.name if is_nifti(path) else f"{path.name}.nii.gz"


def _report_name(path: Path, suffix: str) -> str:
    name = _output_name(path)
    return name[: -len(".nii.gz")] + suffix if name.lower().endswith(".nii.gz") else Path(name).stem + suffix


def _plan(inputs: list[Path], input_path: Path, output: Path, faithfulness_map: Path | None,
          reads: Sequence[tuple[Path | None, str]] = (), faithfulness_report: Path | None = None,
          report_suffix: str = ".json") -> tuple[list[tuple[Path, Path, Path | None, Path | None]], list[Path]]:
    """``(input, output, faithfulness map, faithfulness report)`` and the folders to create. Refuses — before
    anything is read or written — an output that is an input, one of ``reads`` (``(path, option)`` of the other files
    the command reads), lies inside an input folder or names the same file as another output, and an output that
    cannot be written. For a folder input, each report is named after its output with ``report_suffix``."""
    single = inputs == [input_path]  # a file or one DICOM series, not a folder of volumes
    folders: list[Path] = []
    if single:
        plans = [(input_path, output, faithfulness_map, faithfulness_report)]
    else:
        for folder, option in ((output, "OUTPUT"), (faithfulness_map, "--faithfulness-map"),
                               (faithfulness_report, "--faithfulness-report")):
            if folder is None:
                continue
            if folder.exists() and not folder.is_dir():
                raise InputError(folder, f"INPUT is a folder, so {option} must be a folder")
            if not folder.exists():
                if not folder.parent.is_dir():
                    raise InputError(folder, f"{option} folder's parent {folder.parent} does not exist")
                folders.append(folder)
        plans = [(p, output / _output_name(p), faithfulness_map / _output_name(p) if faithfulness_map else None,
                  faithfulness_report / _report_name(p, report_suffix) if faithfulness_report else None)
                 for p in inputs]
    outputs = [] if single else [(output, "OUTPUT"), (faithfulness_map, "--faithfulness-map"),
                                 (faithfulness_report, "--faithfulness-report")]
    for _, target, fmap, report in plans:
        outputs.extend([(target, "OUTPUT"), (ood_path(target), "OUTPUT")])  # the report: if the model has a fingerprint
        outputs.extend((p, "--faithfulness-map") for p in (faithfulness_paths(fmap).values() if fmap is not None else ()))
        outputs.extend((p, "--faithfulness-report") for p in (report_paths(report).values() if report else ()))
    check_outputs(outputs, [(input_path, "INPUT"), *reads])
    for _, target, fmap, report in plans:
        for path in [target, *(faithfulness_paths(fmap).values() if fmap is not None else ())]:
            if path.parent not in folders:
                check_writable(path)
            if not is_nifti(path):
                raise InputError(path, "output must be a .nii or .nii.gz file name")
        for path in [ood_path(target), *(report_paths(report).values() if report else ())]:
            if path.parent not in folders:
                check_writable(path)
    return plans, folders


def translate_path(
    input_path: str | Path,
    output_path: str | Path,
    model: str | Path | TranslationModel,
    faithfulness_map: str | Path | None = None,
    mask: str | Path | None = None,
    target_intensity: dict[str, Any] | None = None,
    faithfulness_eps: float = defaults.FAITHFULNESS_EPS,
    check_model: Callable[[TranslationModel], None] | None = None,
    faithfulness_report: str | Path | None = None,
    faithfulness_calibration: str | Path | None = None,
    **settings: Any,
) -> list[Path]:
    """Translate a file, a DICOM series folder, or every volume of a folder (then ``output_path`` is a folder).

    Output paths are checked first (never the input, never inside an input folder, writable), then the model is
    loaded, then the volumes are read one by one.

    Args:
        input_path: what to translate.
        output_path: output file, or folder for a folder input.
        model: a loaded model, or a checkpoint / bundle path.
        faithfulness_map: also write faithfulness maps (a folder for a folder input).
        mask: foreground mask for the intensity statistics (single input).
        target_intensity: override of the model's back-mapping.
        faithfulness_eps: ε of the maps.
        check_model: called with the loaded model before any volume is read (a caller's own refusals).
        faithfulness_report: also write the regions of invented and erased structure (``.json`` or ``.csv``, a
            ``.png`` montage beside it; for a folder input, a folder of ``.json`` reports).
        faithfulness_calibration: the report's calibration JSON (the built-in T1 → T2 one when ``None``).
        **settings: :class:`InferenceSettings` fields (override the model's saved defaults).

    Returns:
        the written outputs.

    Raises:
        MedtransError: for bad inputs or models; for a folder, after trying every volume, listing those that failed.
    """
    input_path, output_path = Path(input_path), Path(output_path)
    fmap = Path(faithfulness_map) if faithfulness_map is not None else None
    report = Path(faithfulness_report) if faithfulness_report is not None else None
    calibration_path = Path(faithfulness_calibration) if faithfulness_calibration is not None else None
    reads = [(Path(mask) if mask is not None else None, "--mask"), *_model_reads(model, target_intensity),
             (calibration_path, "--faithfulness-calibration")]
    triples, folders = _plan(list_inputs(input_path), input_path, output_path, fmap, reads, report)
    calibration = load_calibration(calibration_path) if report is not None or calibration_path is not None else None
    model = model if isinstance(model, TranslationModel) else load_model(model)
    if check_model is not None:
        check_model(model)
    translator = Translator(model, InferenceSettings.for_model(model, **settings), target_intensity)
    failures, written = [], []
    progress = translator.settings.progress and len(triples) > 1
    try:
        for folder in folders:
            folder.mkdir()
        for src, dst, maps, regions in tqdm(triples, desc="volumes", disable=not progress):
            try:
                ood = ood_path(dst) if model.fingerprint else None
                written.append(translator.translate_file(src, dst, maps, mask, faithfulness_eps, ood, regions,
                                                         calibration))
            except InputError as err:
                if len(triples) == 1:
                    raise
                failures.append(str(err))
                tqdm.write(f"medtrans: skipped {err}")
    finally:
        for folder in reversed(folders):  # the output folders this call created, unless something was written there
            with contextlib.suppress(OSError):
                folder.rmdir()
    if failures:
        raise MedtransError(f"{len(failures)} of {len(triples)} volumes failed:\n  " + "\n  ".join(failures))
    return written
