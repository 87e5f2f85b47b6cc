"""Reading validated 3D volumes (NIfTI or DICOM series) and writing NIfTI atomically."""

from __future__ import annotations

import contextlib
import fnmatch
import functools
import glob
import logging
import math
import os
import re
import signal
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
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

__all__ = ["NIFTI_SUFFIXES", "Volume", "atomic_write", "atomic_write_many", "check_input", "check_outputs",
           "check_writable", "is_dicom_dir", "is_nifti", "list_folder", "nifti_like", "read_mask", "read_volume",
           "remove_stale_partials", "write_volume", "write_volumes"]

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


# -- what a command writes: never an input, never half a result ----------------------------------------------------
def _resolve(path: Path) -> Path:
    """``path`` with ``..`` and symlinks resolved (absolute only, for a symlink loop)."""
    try:
        return path.resolve()
    except (OSError, RuntimeError):
        return Path(os.path.abspath(path))


def _entry(path: Path) -> Path:
    """The directory entry ``path`` names: its folder resolved (``..``, symlinks), its own name kept."""
    return _resolve(path.parent) / path.name if path.name not in ("", ".", "..") else _resolve(path)


def _locations(path: Path) -> set[Path]:
    """Where writing ``path`` lands: the entry itself and, through a symlink, the file it points to."""
    return {_entry(path), _resolve(path)}


def _input_files_and_folders(inputs: Iterable[tuple[str | Path | None, str]]
                             ) -> tuple[dict[Path, tuple[Path, str]], list[tuple[Path, Path, str]]]:
    """Every input file's locations (members of input folders too, followed through symlinks) and every input
    folder (symlinked sub-folders of input folders too), each with the path as given and its option."""
    files: dict[Path, tuple[Path, str]] = {}
    folders: list[tuple[Path, Path, str]] = []
    for given, option in inputs:
        if given is None or str(given) == "":
            continue
        path = Path(given)
        for location in _locations(path):
            files.setdefault(location, (path, option))
        if not path.is_dir():
            continue
        folders.append((_resolve(path), path, option))
        for root, dirs, names in os.walk(path):
            for name in names:
                member = Path(root) / name
                for location in _locations(member):
                    files.setdefault(location, (member, option))
            for name in dirs:
                if os.path.islink(os.path.join(root, name)):  # not walked into; guarded whole
                    folders.append((_resolve(Path(root, name)), Path(root) / name, option))
    return files, folders


def check_outputs(outputs: Iterable[tuple[str | Path | None, str]], inputs: Iterable[tuple[str | Path | None, str]],
                  folders: Iterable[tuple[str | Path | None, str]] = ()) -> None:
    """Refuse, before any work starts, outputs that would overwrite what the command reads, or one another.

    Paths are compared where writing them would land: ``..`` and symlinks resolved, members of input folders
    included (also when a member is a symlink to a file elsewhere).

    Args:
        outputs: ``(path, option)`` of every file or folder the command writes (``None`` paths are skipped); a
            ``*`` in a file name stands for the names the command numbers (``checkpoint_*.pt``).
        inputs: ``(path, option)`` of every file or folder the command reads; a folder stands for all it holds.
        folders: ``(path, option)`` of output folders the command fills with names of its own: no input may lie
            inside them either.

    Raises:
        InputError: naming the output and its option, for an output that is an input, lies inside an input folder,
            names the same file as another output, or is a folder the command fills that holds an input.
    """
    files, input_folders = _input_files_and_folders(inputs)
    owned = [(Path(p), option) for p, option in folders if p is not None]
    written: dict[Path, tuple[Path, str]] = {}
    for path, option in [*((Path(p), o) for p, o in outputs if p is not None), *owned]:
        if "*" in path.name:
            parent = _resolve(path.parent)
            hit = next((given for location, given in files.items()
                        if location.parent == parent and fnmatch.fnmatchcase(location.name, path.name)), None)
            if hit is not None:
                raise InputError(path, f"{option} would overwrite the {hit[1]} {hit[0]}; medtrans never modifies its "
                                       "inputs")
        locations = _locations(path)
        for location in locations:
            if location in files:
                given, by = files[location]
                raise InputError(path, f"{option} would overwrite the {by} {given}; medtrans never modifies its inputs")
            for folder, given, by in input_folders:
                if folder in location.parents:
                    raise InputError(path, f"{option} would write inside the {by} folder {given}; medtrans never "
                                           "writes among its inputs")
            if location in written:
                other, by = written[location]
                same = "" if str(other) == str(path) else f" ({other})"
                raise InputError(path, f"{option} and {by}{same} name the same file; give them different names")
        for location in locations:
            written[location] = (path, option)
    for path, option in owned:
        folder = _resolve(path)
        hit = next((given for location, given in files.items() if folder in location.parents), None)
        if hit is not None:
            raise InputError(path, f"{option} folder holds the {hit[1]} {hit[0]}; medtrans never writes among its "
                                   "inputs")


def _temp_suffix(name: str) -> str:
    """A temporary's suffix: ``.nii.gz`` or the name's last suffix, so writers that choose a format by it agree."""
    return ".nii.gz" if name.lower().endswith(".nii.gz") else Path(name).suffix


_TEMPORARY = re.compile(r"\.(?P<name>.+)\.[a-z0-9_]{8}\.(?:partial(?P<suffix>.*)|probe)")
"""The temporaries :func:`atomic_write_many` and :func:`check_writable` make beside ``<name>`` with
:func:`tempfile.mkstemp`: ``.<name>.XXXXXXXX.partial<suffix>`` and ``.<name>.XXXXXXXX.probe``."""


@functools.cache
def _process_start() -> float:
    """When this process started (seconds since the epoch): from /proc where there is one, else when this module was
    imported (a little later)."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
        return min(_IMPORTED, boot + ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError, StopIteration):
        return _IMPORTED


_IMPORTED = time.time()


def remove_stale_partials(folder: str | Path, name: str = "*") -> list[Path]:
    """Remove the temporaries that killed medtrans runs left in ``folder``.

    Only regular files named as medtrans's atomic writes name their temporaries (``.<name>.XXXXXXXX.partial<suffix>``,
    ``.<name>.XXXXXXXX.probe``, ``<name>`` matching the ``fnmatch`` pattern ``name``) and last modified before this
    process started are removed: never a user's file, never the temporary of a run still writing.

    Returns:
        the files removed.
    """
    start = _process_start()
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        match = _TEMPORARY.fullmatch(entry.name)
        if match is None or not fnmatch.fnmatchcase(match["name"], name):
            continue
        if match["suffix"] is not None and match["suffix"] != _temp_suffix(match["name"]):
            continue
        try:
            info = entry.stat(follow_symlinks=False)
            if not stat.S_ISREG(info.st_mode) or info.st_mtime >= start:
                continue
            os.remove(entry.path)
        except OSError:
            continue
        removed.append(Path(entry.path))
    return removed


def atomic_write_many(writes: Sequence[tuple[str | Path, Callable[[str], object]]]) -> list[Path]:
    """Write several files so that they appear together or not at all.

    Each ``write(tmp_path)`` writes to a temporary beside its path (``.<name>.XXXXXXXX.partial<suffix>``, the
    path's suffix kept); once every write has succeeded, all are renamed into place, with SIGINT and SIGTERM held back
    while they are. When a write or a rename fails, or the process is interrupted, every temporary is removed, and so
    is every file already renamed into place that did not exist before. Stale temporaries that killed runs left beside
    the paths are removed first (:func:`remove_stale_partials`).

    Args:
        writes: ``(path, write)`` pairs, one per file.

    Returns:
        the paths written.

    Raises:
        InputError: naming the path, when it cannot be written (missing or read-only folder, full disk, special file
            system, ...) or is given twice.
    """
    paths = [check_writable(path) for path, _ in writes]
    seen: set[Path] = set()
    for path in paths:
        if _locations(path) & seen:
            raise InputError(path, "is to be written twice at once")
        seen |= _locations(path)
        remove_stale_partials(path.parent, glob.escape(path.name))
    umask = os.umask(0)
    os.umask(umask)
    temporaries: list[str] = []
    created: list[Path] = []  # renamed into place, and did not exist before
    current = paths[0] if paths else None
    held = None
    try:
        for path, (_, write) in zip(paths, writes):
            current = path
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".partial{_temp_suffix(path.name)}",
                                       dir=path.parent)
            temporaries.append(tmp)
            os.close(fd)
            write(tmp)
            os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; results get ordinary permissions
        held = _hold_signals()
        for path, tmp in zip(paths, temporaries):
            current = path
            if not os.path.lexists(path):
                created.append(path)
            os.replace(tmp, path)
    except BaseException as err:
        for leftover in [*temporaries, *created]:
            _remove(leftover)
        if isinstance(err, OSError):
            raise InputError(current, f"cannot be written: {err.strerror or err}") from err
        raise
    finally:
        _release_signals(held)  # a signal held back arrives here: after the files are complete, or after the clean-up
    return paths


def atomic_write(path: str | Path, write: Callable[[str], object]) -> Path:
    """Call ``write(tmp_path)`` on a temporary name beside ``path`` (same suffix), then rename it into place.

    Nothing is left at ``path`` (nor a temporary) if ``write`` fails or the process is interrupted; see
    :func:`atomic_write_many`, for several files that belong together.

    Raises:
        InputError: naming ``path`` when the file system refuses the write (full disk, read-only or special file
            system, ...).
    """
    return atomic_write_many([(path, write)])[0]


_HELD = {signal.SIGINT, signal.SIGTERM}


def _hold_signals() -> set[int] | None:
    """Hold SIGINT and SIGTERM back (main thread only) while a few renames complete; returns the mask to restore."""
    if not hasattr(signal, "pthread_sigmask") or threading.current_thread() is not threading.main_thread():
        return None
    return signal.pthread_sigmask(signal.SIG_BLOCK, _HELD)


def _release_signals(mask: set[int] | None) -> None:
    if mask is not None:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)


def _remove(path: str | Path | None) -> None:
    if path is not None and os.path.lexists(path):
        with contextlib.suppress(OSError):
            os.remove(path)


def nifti_like(data: np.ndarray, like: Volume, description: str = "") -> nib.Nifti1Image:
    """``data`` as a float32 NIfTI image with exactly ``like``'s shape and affine, and its header's qform/sform codes
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
    return image


def write_volume(path: str | Path, data: np.ndarray, like: Volume, description: str = "") -> Path:
    """Write ``data`` as :func:`nifti_like` ``like``, atomically.

    Raises:
        ValueError: if ``data`` does not have ``like``'s shape.
        InputError: naming ``path``, when it cannot be written.
    """
    return write_volumes([(path, data, description)], like)[0]


def write_volumes(volumes: Sequence[tuple[str | Path, np.ndarray, str]], like: Volume) -> list[Path]:
    """Write several ``(path, data, description)`` volumes as :func:`nifti_like` ``like``: all of them or none
    (:func:`atomic_write_many`).

    Raises:
        ValueError: if a ``data`` does not have ``like``'s shape.
        InputError: naming the path, when one cannot be written.
    """
    images = [(path, nifti_like(data, like, description)) for path, data, description in volumes]
    return atomic_write_many([(path, lambda tmp, image=image: nib.save(image, tmp)) for path, image in images])
