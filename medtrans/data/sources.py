"""Where a domain's volumes come from: a folder, a glob pattern, or a CSV (subject id, image path, optional mask)."""

from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from medtrans.errors import InputError
from medtrans.io import check_input, is_dicom_dir, is_nifti, list_folder

__all__ = ["ImageRecord", "list_domain", "pair_domains", "subject_id_of"]

CSV_COLUMNS = ("subject_id", "image")


@dataclass(frozen=True)
class ImageRecord:
    """One volume of a domain: its subject id, image path (NIfTI file or DICOM folder) and optional mask path."""

    subject_id: str
    image: Path
    mask: Path | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "image", Path(self.image))
        if self.mask is not None:
            object.__setattr__(self, "mask", Path(self.mask))


def subject_id_of(path: str | Path) -> str:
    """The file name without ``.nii``/``.nii.gz`` (or the DICOM folder's name)."""
    name = Path(path).name
    for suffix in (".nii.gz", ".nii"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _from_csv(path: Path) -> list[ImageRecord]:
    try:
        table = pd.read_csv(path, dtype=str)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise InputError(path, f"is not a readable CSV ({err})") from err
    missing = [c for c in CSV_COLUMNS if c not in table.columns]
    if missing:
        raise InputError(path, f"CSV lacks column(s) {missing}; expected subject_id, image[, mask]")
    for number, row in enumerate(table.itertuples(index=False), start=1):
        for column in CSV_COLUMNS:
            value = getattr(row, column)
            if not isinstance(value, str) or not value.strip():  # pandas reads an empty cell as NaN
                subject = f" (subject_id {row.subject_id!r})" if isinstance(row.subject_id, str) else ""
                raise InputError(path, f"CSV data row {number}{subject} has an empty {column} cell; every row needs "
                                       "subject_id and image")
    if table["subject_id"].duplicated().any():
        dup = sorted(table.loc[table["subject_id"].duplicated(), "subject_id"].unique())
        raise InputError(path, f"CSV repeats subject ids {dup}")

    def resolve(p: str) -> Path:
        q = Path(p)
        return q if q.is_absolute() else (path.parent / q)

    records = []
    for row in table.itertuples(index=False):
        mask = getattr(row, "mask", None)
        records.append(
            ImageRecord(str(row.subject_id), resolve(row.image), resolve(mask) if isinstance(mask, str) and mask else None)
        )
    return records


def _images_in(paths: list[Path]) -> list[Path]:
    return sorted(p for p in paths if (p.is_file() and is_nifti(p)) or (p.is_dir() and is_dicom_dir(p)))


def list_domain(spec: str | Path, masks: str | Path | None = None) -> list[ImageRecord]:
    """List a domain's volumes.

    Args:
        spec: a folder (every NIfTI file and DICOM-series sub-folder in it), a glob pattern, one NIfTI file, or a
            ``.csv`` file with columns ``subject_id``, ``image`` and optionally ``mask`` (relative paths are relative
            to the CSV).
        masks: for folder/glob specs, a folder or glob of masks matched to images by subject id; images without a
            mask are an error. A subject id is the file name without ``.nii``/``.nii.gz``, or the parent folder's name
            when file names repeat (``sub-01/t1.nii.gz``, ``sub-02/t1.nii.gz``).

    Returns:
        records sorted by subject id.

    Raises:
        InputError: for a missing source, an empty domain, duplicate subject ids, a referenced file that does not exist,
            or an image without its mask.
    """
    text = str(spec)
    path = Path(text)
    if text.lower().endswith(".csv"):
        if not path.exists():
            raise InputError(path, "CSV file does not exist")
        check_input(path)  # a FIFO or a device named *.csv would block
        if not path.is_file():
            raise InputError(path, "is a folder, not a CSV file")
        records = _from_csv(path)
    else:
        if any(c in text for c in "*?["):
            images = _images_in([Path(p) for p in glob.glob(text)])
        elif path.is_dir():
            images = [path] if is_dicom_dir(path) else _images_in(list_folder(path))
        elif path.is_file() and is_nifti(path):
            images = [path]
        elif not path.exists():
            raise InputError(path, "does not exist")
        else:
            check_input(path)  # names a FIFO or a device as such
            raise InputError(path, "is neither a folder, a glob pattern, a NIfTI file (.nii/.nii.gz) nor a .csv file")
        mask_for: dict[str, Path] = {}
        ids = [subject_id_of(image) for image in images]
        if len(set(ids)) != len(ids):  # e.g. sub-01/t1.nii.gz, sub-02/t1.nii.gz: the folder names the subject
            ids = [image.parent.name for image in images]
        if len(set(ids)) != len(ids):
            raise InputError(path, f"two images share a subject id: {sorted({i for i in ids if ids.count(i) > 1})}")
        if masks is not None:
            mask_for = {r.subject_id: r.image for r in list_domain(masks)}
        records = []
        for sid, image in zip(ids, images):
            if masks is not None and sid not in mask_for:
                raise InputError(image, f"has no mask for subject id {sid!r} in {masks}")
            records.append(ImageRecord(sid, image, mask_for.get(sid)))
    if not records:
        raise InputError(path, "holds no NIfTI file or DICOM series")
    for r in records:
        for p in (r.image, r.mask):
            if p is not None and not p.exists():
                raise InputError(p, f"listed for subject {r.subject_id} but does not exist")
            if p is not None:
                check_input(p)  # never a FIFO or a device: reading one would block or never end
    return sorted(records, key=lambda r: r.subject_id)


def _grid(path: Path) -> tuple[tuple[int, ...], np.ndarray]:
    try:
        image = nib.load(str(path))
    except Exception as err:  # noqa: BLE001 - any reader failure is the file's problem
        raise InputError(path, f"cannot read its header ({err})") from err
    return tuple(image.shape[:3]), image.affine


def pair_domains(a: list[ImageRecord], b: list[ImageRecord], atol: float = 1e-3) -> list[tuple[ImageRecord, ImageRecord]]:
    """Match two domains by subject id for paired training, validation and evaluation.

    Every subject must be in both domains, and each pair (and its mask) must share one voxel grid (shape and affine).

    Raises:
        InputError: naming the unmatched subjects or the first file whose grid differs.
    """
    by_id = {r.subject_id: r for r in b}
    only_a = sorted({r.subject_id for r in a} - set(by_id))
    only_b = sorted(set(by_id) - {r.subject_id for r in a})
    if only_a or only_b:
        where = a[0].image.parent if a else Path(".")
        raise InputError(where, f"unpaired subjects: only in A {only_a}, only in B {only_b}")
    pairs = []
    for ra in a:
        rb = by_id[ra.subject_id]
        shape, affine = _grid(ra.image)
        for other in (rb.image, ra.mask, rb.mask):
            if other is None or other.is_dir() or ra.image.is_dir():
                continue
            o_shape, o_affine = _grid(other)
            if o_shape != shape or not np.allclose(o_affine, affine, atol=atol):
                raise InputError(
                    other, f"grid {o_shape} does not match {ra.image.name} {shape} of subject {ra.subject_id}"
                )
        pairs.append((ra, rb))
    return pairs
