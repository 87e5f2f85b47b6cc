"""What a command writes: never one of its inputs, never half a result. Outputs are checked before any work
starts, written through temporaries renamed into place (several files together or none), and temporaries a killed
run left behind are recognised and removed. NIfTI results are written like the volume they were computed from."""

from __future__ import annotations

import contextlib
import fnmatch
import functools
import glob
import os
import re
import signal
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

from medtrans.errors import InputError
from medtrans.io.volumes import Volume

__all__ = ["atomic_write", "atomic_write_many", "check_outputs", "check_writable", "nifti_like",
           "remove_stale_partials", "write_volume", "write_volumes"]


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
