"""The on-disk preprocessed cache: each training subject read, validated and preprocessed once, then memory-mapped.

A training set larger than the memory budget (or any set, when asked) is held here instead of in memory. An entry is
one folder per subject, named by a hash of everything its content depends on:

- each input file's resolved path, size, modification time and a hash of its first 64 KiB (and its mask's), so an
  edited or replaced file gets a new entry;
- the preprocessing of each image and the sampler's foreground threshold;
- :data:`CACHE_VERSION`, raised whenever the preprocessing code changes what it writes.

An entry holds one ``.npy`` file per image (float32, the network grid before any padding to the patch), the flat
indices of the foreground the sampler draws from (``foreground.npy``), and ``meta.json`` (the subject, the intensity
ranges and backgrounds, the fingerprint statistics). It is written into a private ``.partial-*`` folder and renamed
into place only once complete, so a run killed while caching leaves nothing a later run would trust, and two runs that
build the same entry at once both end with one complete copy. An entry whose files do not match its ``meta.json``
(e.g. a truncated copy) is rebuilt.

Reading goes through shared mappings of the files (:class:`DiskArray`): a patch copies only the pages it covers, and
the process's resident memory stays bounded however many patches a long run cuts (the kernel's page cache keeps
recently read pages for every process).
"""

from __future__ import annotations

import hashlib
import json
import logging
import mmap
import os
import shutil
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medtrans.errors import InputError

__all__ = ["CACHE_VERSION", "DiskArray", "DiskCache", "default_cache_dir"]

CACHE_VERSION = 1
"""Raised whenever the preprocessing code changes what an entry holds: entries of other versions are not read."""
_HEAD_BYTES = 2**16
logger = logging.getLogger("medtrans.data")


def default_cache_dir() -> Path:
    """``$MEDTRANS_CACHE_DIR``, else ``$XDG_CACHE_HOME/medtrans`` (``~/.cache/medtrans``)."""
    if os.environ.get("MEDTRANS_CACHE_DIR"):
        return Path(os.environ["MEDTRANS_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "medtrans"


class _Mappings:
    """The open read-only mappings of cache files, shared by every :class:`DiskArray` of the process.

    At most :data:`MAX_OPEN` files stay mapped (least recently used closed first), and once the pages the reads may
    have touched add up to :data:`RELEASE_BYTES`, every mapping drops its pages (``MADV_DONTNEED``; the next read
    faults them in again from the kernel's page cache). So the process's resident memory stays bounded however many
    patches a long run cuts, while a patch costs about what a slice of an array in memory costs.
    """

    MAX_OPEN = 128
    RELEASE_BYTES = 2**30

    def __init__(self) -> None:
        self._open: OrderedDict[Path, mmap.mmap] = OrderedDict()
        self._touched = 0
        self._lock = threading.Lock()

    def array(self, a: DiskArray) -> np.ndarray:
        """``a`` as an array over its file's mapping."""
        with self._lock:
            if a.path in self._open:
                self._open.move_to_end(a.path)
                mapped = self._open[a.path]
            else:
                with open(a.path, "rb") as f:
                    mapped = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
                self._open[a.path] = mapped
                while len(self._open) > self.MAX_OPEN:
                    self._open.popitem(last=False)  # closed once no reader still holds it
        return np.frombuffer(mapped, a.dtype, a.size, a.offset).reshape(a.shape)

    def touched(self, pages: int) -> None:
        """Count ``pages`` a read may have brought in; past :data:`RELEASE_BYTES`, every mapping drops its pages."""
        with self._lock:
            self._touched += pages * mmap.PAGESIZE
            if self._touched > self.RELEASE_BYTES and hasattr(mmap, "MADV_DONTNEED"):
                for mapped in self._open.values():
                    mapped.madvise(mmap.MADV_DONTNEED)
                self._touched = 0


_MAPPINGS = _Mappings()


@dataclass(frozen=True)
class DiskArray:
    """A ``.npy`` array of the cache, read region by region through a shared, bounded set of mappings.

    Indexing returns an in-memory copy of the region, as ``numpy`` indexing of the whole array would.
    """

    path: Path
    shape: tuple[int, ...]
    dtype: np.dtype
    offset: int

    @classmethod
    def open(cls, path: Path) -> DiskArray:
        """Read the header of ``path``; raises ``ValueError`` when its size does not match it (a truncated file)."""
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read_header(f)
            offset = f.tell()
        if fortran:
            raise ValueError(f"{path} is not in C order")
        if path.stat().st_size != offset + int(np.prod(shape)) * dtype.itemsize:
            raise ValueError(f"{path} is {path.stat().st_size} bytes, not what its header says")
        return cls(path, tuple(shape), dtype, offset)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def view(self, index: Any) -> np.ndarray:
        """A read-only view of a region, valid as long as it is referenced (it keeps its mapping open)."""
        if not self.size:
            return np.empty(self.shape, self.dtype)[index]
        view = _MAPPINGS.array(self)[index]
        _MAPPINGS.touched(int(np.prod(np.shape(view)[:-1])) if np.ndim(view) > 1 else 1)  # one page per row, at most
        return view

    def __getitem__(self, index: Any) -> np.ndarray:
        return np.array(self.view(index))

    def read(self) -> np.ndarray:
        """The whole array, in memory."""
        return self[...]


@dataclass(frozen=True)
class Entry:
    """One complete cache entry: ``images`` per key and the ``foreground`` indices on disk, and its metadata."""

    images: dict[str, DiskArray]
    foreground: DiskArray
    meta: dict[str, Any]


class DiskCache:
    """Preprocessed subjects under ``root`` (created when first written).

    Args:
        root: the cache folder; several runs, and several processes of one run, may share it.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser()

    @staticmethod
    def key(records: Mapping[str, Any], preprocessing: Mapping[str, Any], foreground_threshold: float) -> str:
        """The entry name for one subject's ``records`` (``{key: ImageRecord}``) and their preprocessing."""

        def stat(path: Path | None) -> list[Any] | None:
            if path is None:
                return None
            resolved = Path(path).resolve()
            if resolved.is_dir():  # a DICOM series: every file in it
                return [str(resolved), *[(p.name, p.stat().st_size, p.stat().st_mtime_ns)
                                         for p in sorted(resolved.iterdir()) if p.is_file()]]
            info = resolved.stat()
            with open(resolved, "rb") as f:
                head = hashlib.sha256(f.read(_HEAD_BYTES)).hexdigest()
            return [str(resolved), info.st_size, info.st_mtime_ns, head]

        described = {
            "version": CACHE_VERSION,
            "foreground_threshold": float(foreground_threshold),
            "images": {k: {"image": stat(r.image), "mask": stat(r.mask),
                           "preprocessing": asdict(preprocessing[k])} for k, r in sorted(records.items())},
        }
        text = json.dumps(described, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def get(self, key: str) -> Entry | None:
        """The complete entry ``key``, or ``None`` when there is none (or only an unreadable or truncated one)."""
        folder = self.root / key
        if not (folder / "meta.json").is_file():
            return None
        try:
            meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
            images = {k: DiskArray.open(folder / f"{k}.npy") for k in meta["keys"]}
            foreground = DiskArray.open(folder / "foreground.npy")
            if any(list(a.shape) != meta["shape"] for a in images.values()) or foreground.size != meta["foreground"]:
                raise ValueError("its arrays do not match meta.json")
        except (OSError, ValueError, KeyError, TypeError) as err:
            logger.warning("cache entry %s is damaged (%s): rebuilt", folder, err)
            return None
        return Entry(images, foreground, meta)

    def put(self, key: str, build: Callable[[], tuple[dict[str, np.ndarray], np.ndarray, dict[str, Any]]]) -> Entry:
        """Entry ``key``, built by ``build() -> (images, foreground indices, metadata)`` when the cache lacks it.

        The entry appears whole or not at all; when another process completes it first, its copy is kept.
        """
        entry = self.get(key)
        if entry is not None:
            return entry
        images, foreground, meta = build()
        partial = self.root / f".partial-{key}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            partial.mkdir(parents=True)
        except OSError as err:
            raise InputError(self.root, f"the training cache cannot be written there ({err.strerror})") from None
        try:
            for name, array in {**images, "foreground": foreground}.items():
                with open(partial / f"{name}.npy", "wb") as f:
                    np.save(f, np.ascontiguousarray(array))
                    f.flush()
                    os.fsync(f.fileno())
            shape = list(next(iter(images.values())).shape)
            record = {**meta, "keys": sorted(images), "shape": shape, "foreground": int(foreground.size)}
            (partial / "meta.json").write_text(json.dumps(record), encoding="utf-8")
            try:
                os.rename(partial, self.root / key)
            except OSError:  # another process completed it first (or a damaged copy is in the way)
                if self.get(key) is None:
                    shutil.rmtree(self.root / key, ignore_errors=True)
                    os.rename(partial, self.root / key)
        except OSError as err:
            raise InputError(self.root, f"the training cache cannot be written there ({err.strerror or err})") from None
        finally:
            shutil.rmtree(partial, ignore_errors=True)
        entry = self.get(key)
        if entry is None:
            raise OSError(f"cache entry {self.root / key} could not be written")
        return entry
