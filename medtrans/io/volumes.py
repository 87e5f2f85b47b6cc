"""Reading validated 3D volumes (NIfTI or DICOM series) and writing NIfTI volumes like them, atomically."""

from __future__ import annotations

import contextlib
import gzip
import logging
import math
import stat
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel import imageglobals as nib_globals
from nibabel.analyze import AnalyzeHeader
from nibabel.arrayproxy import ArrayProxy
from nibabel.openers import ImageOpener

from medtrans.defaults import MAX_VOXELS
from medtrans.errors import InputError

__all__ = ["NIFTI_SUFFIXES", "Volume", "check_input", "check_same_grid", "is_dicom_dir", "is_nifti", "list_folder",
           "read_mask", "read_volume"]

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

    @property
    def axial_axis(self) -> int:
        """The array axis closest to superior–inferior (the one axial slices are taken across)."""
        return int(np.argmax(np.abs(np.asarray(self.affine)[2, :3])))


def is_nifti(path: str | Path) -> bool:
    """Whether the name ends in ``.nii`` or ``.nii.gz``."""
    return str(path).lower().endswith(NIFTI_SUFFIXES)


_SPECIAL_FILES = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
                  (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def check_input(path: str | Path) -> Path:
    """An input must exist and be a regular file or a folder. A FIFO, a device or a socket (``/dev/zero``, a named
    pipe) would block or never end, so it is refused before it is opened.

    Raises:
        InputError: naming the path, when it does not exist, cannot be examined, or is neither a file nor a folder.
    """
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        raise InputError(path, "does not exist") from None
    except OSError as err:
        raise InputError(path, f"cannot be read: {err.strerror or err}") from None
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        kind = next((name for test, name in _SPECIAL_FILES if test(mode)), "a special file")
        raise InputError(path, f"is {kind}, not a regular file or a folder; medtrans reads only files and folders")
    return path


def list_folder(path: str | Path) -> list[Path]:
    """The entries of a folder, sorted.

    Raises:
        InputError: naming the folder, when it cannot be listed (no permission to read it, an I/O error).
    """
    path = Path(path)
    try:
        return sorted(path.iterdir())
    except OSError as err:
        raise InputError(path, f"folder cannot be listed: {err.strerror or err}") from None


def _has_dicom_file(folder: Path, max_files: int = 64) -> bool:
    """A cheap, quiet pre-check: a file of the folder carries the DICOM preamble magic ``DICM`` at byte 128.

    Raises:
        InputError: naming the folder, when it cannot be listed.
    """
    for i, entry in enumerate(p for p in list_folder(folder) if p.is_file()):
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
    files = reader.GetGDCMSeriesFileNames(str(path), series[0])
    first = sitk.ImageFileReader()
    first.SetFileName(files[0])
    first.ReadImageInformation()  # the header only: refuse a series over the limit before reading its pixels
    _check_voxels(path, (*first.GetSize()[:2], math.prod(first.GetSize()[2:]) * len(files)),
                  f"its {len(files)} DICOM files claim")
    reader.SetFileNames(files)
    image = reader.Execute()
    data = sitk.GetArrayFromImage(image).transpose(2, 1, 0)  # SimpleITK arrays are (z, y, x)
    direction = np.array(image.GetDirection()).reshape(3, 3)
    lps = np.eye(4)
    lps[:3, :3] = direction * np.array(image.GetSpacing())
    lps[:3, 3] = image.GetOrigin()
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps  # ITK's LPS world to NIfTI's RAS world
    return data, affine


_MAX_GZIP_RATIO = 1032
"""Deflate's largest expansion: no gzip stream decompresses to more than about 1032 times its compressed size."""


class _QuietNibabel(logging.Filter):
    """Drops nibabel's log lines (header problems it fixes, or logs before raising) in a thread inside
    :func:`_quiet_nibabel`: :func:`read_volume` states what is wrong itself, in one line."""

    local = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(self.local, "on", False)


_QUIET = _QuietNibabel()
nib_globals.logger.addFilter(_QUIET)


@contextlib.contextmanager
def _quiet_nibabel():
    on, _QUIET.local.on = getattr(_QUIET.local, "on", False), True
    try:
        with np.errstate(all="ignore"):  # NumPy's warnings on NaN/Inf header fields (thread-local)
            yield
    finally:
        _QUIET.local.on = on


def _shape_text(shape: Sequence[int]) -> str:
    return "×".join(str(int(s)) for s in shape)


def _size_text(n: float) -> str:
    for unit in ("bytes", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{int(n)} bytes" if unit == "bytes" else f"{n:.3g} {unit}"
        n /= 1000
    raise AssertionError


def _check_voxels(path: Path, shape: Sequence[int], claim: str = "its header claims") -> None:
    voxels = math.prod(int(s) for s in shape)
    if voxels > MAX_VOXELS:
        raise InputError(path, f"{claim} {_shape_text(shape)} = {voxels:,} voxels, over medtrans's limit of "
                               f"{MAX_VOXELS:,} voxels per volume (medtrans.defaults.MAX_VOXELS); crop or "
                               "downsample it first")


def _check_size(path: Path, data_file: Path, shape: Sequence[int], dtype: np.dtype, offset: int) -> None:
    """The file must be able to hold what its header claims: uncompressed, ``offset`` + the voxel bytes; gzipped, no
    more than gzip can expand to."""
    if data_file != path:
        check_input(data_file)
    size = data_file.stat().st_size
    need = offset + math.prod(int(s) for s in shape) * dtype.itemsize
    claim = f"its header claims {_shape_text(shape)} {dtype.name} voxels ({_size_text(need)} with the header)"
    where = "" if data_file == path else f" (data file {data_file})"
    with open(data_file, "rb") as f:
        magic = f.read(4)
    if magic.startswith(b"\x1f\x8b"):  # gzip (.nii.gz, .mgz)
        if need > _MAX_GZIP_RATIO * size + 1024:
            raise InputError(path, f"{claim}, but the file{where} holds {_size_text(size)}, and gzip cannot "
                                   f"expand more than {_MAX_GZIP_RATIO}-fold: truncated, or a header that does not "
                                   "describe it")
    elif not magic.startswith((b"BZh", b"\x28\xb5\x2f\xfd")) and size < need:  # neither bzip2 nor zstd: uncompressed
        raise InputError(path, f"is truncated: {claim}, but the file{where} holds {size:,} bytes")


def _transform_problem(matrix: np.ndarray) -> str | None:
    """Why ``matrix`` cannot place voxels in the world (``None`` when it can): NaN/Inf entries, or a 3×3 part that
    is singular (a zero voxel axis, or axes along fewer than three directions)."""
    m = np.asarray(matrix, dtype=np.float64)
    if m.shape != (4, 4) or not np.isfinite(m).all():
        return "has NaN or infinite entries"
    axes = m[:3, :3]
    lengths = np.sqrt((axes**2).sum(axis=0))
    if not (lengths > 0).all() or abs(np.linalg.det(axes)) <= 1e-6 * float(np.prod(lengths)):
        return (f"is singular (voxel axes of lengths {', '.join(f'{v:g}' for v in lengths)} mm that do not span 3D "
                "space)")
    return None


def _check_header(path: Path, image: nib.spatialimages.SpatialImage) -> None:
    """Refuse from the header and the file's size alone, before any voxel is read: data that is not real numbers, a
    volume over :data:`~medtrans.defaults.MAX_VOXELS`, a file too small for what its header claims, a voxel spacing
    (pixdim) that is not finite and positive, and a voxel-to-world transform (sform, qform, the affine in use) with
    NaN/Inf entries or a singular 3×3 part."""
    dtype = np.dtype(image.get_data_dtype())
    if dtype.kind == "c":
        raise InputError(path, f"holds complex-valued data ({dtype.name}); medtrans reads real-valued volumes only "
                               "(save the magnitude or the real part first)")
    if dtype.kind not in "biuf":
        raise InputError(path, f"holds data of type {dtype}, not real numbers; medtrans reads scalar volumes only")
    shape = tuple(int(s) for s in image.shape)
    _check_voxels(path, shape)
    if isinstance(image.dataobj, ArrayProxy):
        _check_size(path, Path(image.file_map["image"].filename), shape, dtype, int(image.dataobj.offset))
    header = image.header
    forms: list[tuple[str, Callable[[], np.ndarray]]] = []
    if isinstance(header, AnalyzeHeader):  # NIfTI-1/2 and Analyze: the raw fields, before nibabel "fixes" them
        with ImageOpener(image.file_map.get("header", image.file_map["image"]).filename) as f:  # .nii: one file
            header = type(header).from_fileobj(f, check=False)
        spacing = np.asarray(header["pixdim"][1 : 1 + min(3, len(shape))], dtype=np.float64)
        if not (np.isfinite(spacing).all() and (spacing > 0).all()):
            raise InputError(path, f"header voxel spacing (pixdim) {', '.join(f'{v:g}' for v in spacing)} is not "
                                   "finite and > 0 along every axis")
        if isinstance(header, nib.Nifti1Header):
            forms += [(name, getter) for name, code, getter in (("sform", "sform_code", header.get_sform),
                                                                ("qform", "qform_code", header.get_qform))
                      if int(header[code]) > 0]
    for name, getter in [*forms, ("voxel-to-world affine", lambda: image.affine)]:
        try:
            matrix = getter()
        except Exception:  # noqa: BLE001 - a transform nibabel cannot even compute is not a usable one
            matrix = np.full((4, 4), np.nan)
        problem = _transform_problem(matrix)
        if problem is not None:
            raise InputError(path, f"header {name} {problem}")


def read_volume(path: str | Path, allow_constant: bool = False) -> Volume:
    """Read a 3D volume and check it can be translated.

    The header is checked before any voxel is read (:func:`_check_header`), so a file whose header claims more than
    it holds, or more voxels than :data:`~medtrans.defaults.MAX_VOXELS`, never allocates the memory it claims.

    Args:
        path: a ``.nii``/``.nii.gz`` file or a folder holding one DICOM series.
        allow_constant: accept a constant volume (masks may be all ones).

    Returns:
        the volume as float32; a trailing singleton 4th axis is dropped.

    Raises:
        InputError: naming the file, for a missing, unreadable, corrupt or truncated file, a FIFO or device, a
            non-image file, complex or non-numeric data, a volume over the voxel limit, a voxel spacing or
            voxel-to-world transform that is not finite or not invertible, data that is not 3D, NaN/Inf voxels, or
            a constant image.
    """
    path = check_input(path)
    header = None
    try:
        if path.is_dir():
            if not is_dicom_dir(path):
                raise InputError(path, "is a folder without a DICOM series")
            data, affine = _read_dicom(path)
            problem = _transform_problem(affine)
            if problem is not None:
                raise InputError(path, f"DICOM geometry (spacing, orientation) {problem}")
        else:
            with _quiet_nibabel():
                image = nib.load(str(path))
                _check_header(path, image)
                data = np.asarray(image.dataobj, dtype=np.float32)
            _check_gzip_trailer(path, data.size * image.get_data_dtype().itemsize)
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


def _check_gzip_trailer(path: Path, data_bytes: int) -> None:
    """Inflate a gzip-compressed file to its end, so that its trailer (CRC-32 and length) is checked: a byte flipped
    inside a stream that still inflates is otherwise read as wrong voxels. Streams longer than the header and the
    voxels (plus 1 MiB) are not followed further.

    Raises:
        gzip.BadGzipFile, EOFError, zlib.error: for a corrupt or truncated stream (reported by the caller).
    """
    with open(path, "rb") as raw:
        if raw.read(2) != b"\x1f\x8b":
            return
    budget = data_bytes + 2**20 + 352 * 64  # the voxels, a header with extensions, slack
    with gzip.open(path, "rb") as stream:
        while budget > 0 and (chunk := stream.read(min(2**22, budget))):
            budget -= len(chunk)


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


def check_same_grid(pred: Volume, target: Volume, mask: Volume | None = None) -> None:
    """Refuse a target or mask whose shape or affine differs from the prediction's (scores compare voxel by voxel).

    Raises:
        InputError: naming the volume that differs.
    """
    for other in (target, mask):
        if other is None:
            continue
        if other.data.shape != pred.data.shape:
            raise InputError(other.path, f"shape {other.data.shape} differs from the prediction {pred.path}'s "
                                         f"{pred.data.shape}; shape and affine must be identical (resample first)")
        if not np.allclose(other.affine, pred.affine, atol=1e-3):
            fmt = lambda a: np.array2string(np.asarray(a)[:3], precision=3, suppress_small=True, separator=",").replace("\n", "")  # noqa: E731
            raise InputError(other.path, f"affine {fmt(other.affine)} differs from the prediction {pred.path}'s "
                                         f"{fmt(pred.affine)}; shape and affine must be identical (resample first)")
