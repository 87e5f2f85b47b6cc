"""Reading validated 3D volumes (NIfTI or DICOM series) and writing NIfTI atomically."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from medtrans.errors import InputError

__all__ = ["NIFTI_SUFFIXES", "Volume", "atomic_write", "check_writable", "is_dicom_dir", "is_nifti", "read_mask", "read_volume",
           "write_volume"]

NIFTI_SUFFIXES = (".nii", ".nii.gz")


@dataclass
class Volume:
    """A 3D scalar volume in its file's voxel order with the affine (RAS world) that places it.

    Attributes:
        data: ``(X, Y, Z)`` float32 array.
        affine: ``4×4`` voxel-to-world (RAS+, NIfTI convention).
        path: where it was read from.
        header: the NIfTI header to reuse when writing results (``None`` for DICOM input).
    """

    data: np.ndarray
    affine: np.ndarray
    path: Path
    header: nib.Nifti1Header | None = None

    @property
    def spacing(self) -> tuple[float, ...]:
        """Voxel size in mm along each array axis."""
        return tuple(float(s) for s in np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0)))


def is_nifti(path: str | Path) -> bool:
    """Whether the name ends in ``.nii`` or ``.nii.gz``."""
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def _has_dicom_file(folder: Path, max_files: int = 64) -> bool:
    """A cheap, quiet pre-check: a file of the folder carries the DICOM preamble magic ``DICM`` at byte 128."""
    for i, entry in enumerate(p for p in folder.iterdir() if p.is_file()):
        if i >= max_files:
            break
        try:
            with open(entry, "rb") as f:
                f.seek(128)
                if f.read(4) == b"DICM":
                    return True
        except OSError:
            continue
    return False


def is_dicom_dir(path: str | Path) -> bool:
    """Whether ``path`` is a folder holding at least one DICOM series (SimpleITK/GDCM)."""
    path = Path(path)
    if not path.is_dir() or not _has_dicom_file(path):
        return False
    import SimpleITK as sitk

    return bool(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(path)))


def _read_dicom(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    series = reader.GetGDCMSeriesIDs(str(path))
    if len(series) != 1:
        raise InputError(path, f"folder holds {len(series)} DICOM series; give the folder of exactly one")
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(path), series[0]))
    image = reader.Execute()
    data = sitk.GetArrayFromImage(image).transpose(2, 1, 0)  # SimpleITK arrays are (z, y, x)
    direction = np.array(image.GetDirection()).reshape(3, 3)
    lps = np.eye(4)
    lps[:3, :3] = direction * np.array(image.GetSpacing())
    lps[:3, 3] = image.GetOrigin()
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps  # ITK's LPS world to NIfTI's RAS world
    return data, affine


def read_volume(path: str | Path, allow_constant: bool = False) -> Volume:
    """Read a 3D volume and check it can be translated.

    Args:
        path: a ``.nii``/``.nii.gz`` file or a folder holding one DICOM series.
        allow_constant: accept a constant volume (masks may be all ones).

    Returns:
        the volume as float32; a trailing singleton 4th axis is dropped.

    Raises:
        InputError: naming the file, for a missing, unreadable, corrupt or truncated file, a non-image file, data that
            is not 3D, NaN/Inf voxels, or a constant image.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, "does not exist")
    header = None
    try:
        if path.is_dir():
            if not is_dicom_dir(path):
                raise InputError(path, "is a folder without a DICOM series")
            data, affine = _read_dicom(path)
        else:
            image = nib.load(str(path))
            data = np.asarray(image.dataobj, dtype=np.float32)
            affine = image.affine
            header = image.header
    except InputError:
        raise
    except nib.filebasedimages.ImageFileError as err:
        raise InputError(path, f"is not a readable NIfTI/medical image ({_first_line(err)})") from err
    except Exception as err:  # noqa: BLE001 - zlib, EOF, mmap, SimpleITK...: any reader failure is the file's problem
        raise InputError(path, f"cannot be read, corrupt or truncated? ({type(err).__name__}: {_first_line(err)})") from err
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise InputError(path, f"expected a 3D volume, got {data.ndim}D data of shape {data.shape}")
    if min(data.shape) < 2:
        raise InputError(path, f"expected a 3D volume, got shape {data.shape} (a single slice)")
    if not np.isfinite(data).all():
        raise InputError(path, f"contains {int((~np.isfinite(data)).sum())} NaN/Inf voxels")
    if not allow_constant and float(data.max()) == float(data.min()):
        raise InputError(path, f"is a constant image (every voxel = {float(data.min())}); nothing to translate")
    return Volume(np.ascontiguousarray(data, dtype=np.float32), np.asarray(affine, dtype=np.float64), path, header)


def read_mask(path: str | Path, image: Volume) -> np.ndarray:
    """Read a foreground mask (voxels > 0) that must lie on ``image``'s grid.

    Raises:
        InputError: naming the mask, when it cannot be read, lies on another grid, or is empty.
    """
    mask = read_volume(path, allow_constant=True)
    if mask.data.shape != image.data.shape or not np.allclose(mask.affine, image.affine, atol=1e-3):
        raise InputError(path, f"mask grid {mask.data.shape} differs from the image {image.path} {image.data.shape}")
    if not (mask.data > 0).any():
        raise InputError(path, "mask is empty")
    return mask.data > 0


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return (text.splitlines()[0] if text else type(err).__name__)[:300]


def check_writable(path: str | Path) -> Path:
    """Fail early, before any computation, when ``path`` cannot be written: its folder must exist and accept a new
    file (a probe file is created and removed, which catches read-only and special file systems such as /proc).

    Raises:
        InputError: if the parent folder is missing, a file, or not writable, or ``path`` is an existing folder.
    """
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise InputError(path, "output path is a folder, expected a file name")
    if not parent.is_dir():
        blocking = next((p for p in [parent, *parent.parents] if p.exists()), None)
        if blocking is not None and not blocking.is_dir():
            raise InputError(path, f"cannot be written: {blocking} is a file, not a folder")
        raise InputError(path, f"output folder {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(path, f"output folder {parent} is not writable")
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=parent)
        os.close(fd)
        os.remove(probe)
    except OSError as err:
        raise InputError(path, f"cannot be written in {parent}: {err.strerror or err}") from None
    return path


def atomic_write(path: str | Path, write) -> Path:
    """Call ``write(tmp_path)`` on a temporary name beside ``path`` (same suffix), then rename it into place.

    Nothing is left at ``path`` (nor a temporary) if ``write`` fails.

    Raises:
        InputError: naming ``path`` when the file system refuses the write (full disk, read-only or special file
            system, ...).
    """
    path = check_writable(path)
    suffix = "".join(path.suffixes[-2:]) if path.name.lower().endswith(".nii.gz") else path.suffix
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".partial{suffix}", dir=path.parent)
        os.close(fd)
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; results get ordinary permissions
        os.replace(tmp, path)
    except OSError as err:
        _remove(tmp)
        raise InputError(path, f"cannot be written: {err.strerror or err}") from err
    except BaseException:
        _remove(tmp)
        raise
    return path


def _remove(path: str | None) -> None:
    if path is not None and os.path.exists(path):
        os.remove(path)


def write_volume(path: str | Path, data: np.ndarray, like: Volume, description: str = "") -> Path:
    """Write ``data`` as float32 NIfTI with exactly ``like``'s shape and affine, and its header's qform/sform codes
    (the scanner / aligned / MNI meaning clinical pipelines read); codes 1 (scanner) for DICOM input.

    Raises:
        ValueError: if ``data`` does not have ``like``'s shape.
    """
    if data.shape != like.data.shape:
        raise ValueError(f"result shape {data.shape} differs from the input's {like.data.shape}")
    header = like.header.copy() if like.header is not None else None
    image = nib.Nifti1Image(np.asarray(data, dtype=np.float32), like.affine, header)
    image.set_data_dtype(np.float32)
    image.header.set_slope_inter(1.0, 0.0)
    qform_code, sform_code = (int(like.header["qform_code"]), int(like.header["sform_code"])) if like.header is not None else (1, 1)
    image.set_qform(like.affine, code=qform_code)
    image.set_sform(like.affine, code=sform_code)
    if description:
        image.header["descrip"] = description[:79].encode()
    return atomic_write(path, lambda tmp: nib.save(image, tmp))
