"""The on-disk preprocessed cache: each training subject read, validated and preprocessed once, then memory-mapped.

A training set larger than the memory budget (or any set, when asked) is held here instead of in memory. An entry is
one folder per subject, named by a hash of everything its content depends on:

- each input file's resolved path, size, modification time and a hash of its first 64 KiB (and its mask's), so an
  edited or replaced file gets a new entry;
- the preprocessing of each image, the sampler's foreground threshold and the block shape (so 2D and 3D runs over the
  same data hold entries of their own);
- :data:`CACHE_VERSION`, raised whenever the preprocessing code changes what it writes.

An entry holds one block file per image (``a.blocks``: float32, the network grid before any padding to the patch,
stored as contiguous blocks that suit the patch, see :mod:`medtrans.data.blocks`), the flat indices of the foreground
the sampler draws from as runs of consecutive indices (``foreground.npy``, read whole into memory: a few hundred KiB
for a 1 mm brain), and ``meta.json`` (the subject, the intensity ranges and backgrounds, the
fingerprint statistics). It is written into a private ``.partial-*`` folder and renamed
into place only once complete, so a run killed while caching leaves nothing a later run would trust, and two runs that
build the same entry at once both end with one complete copy. An entry whose files do not match its ``meta.json``
(e.g. a truncated copy) is rebuilt.

Reading goes through shared mappings of the files (:class:`~medtrans.data.blocks.BlockArray`): a patch copies only
the blocks it overlaps, and the process's resident memory stays bounded however many patches a long run cuts (the
kernel's page cache keeps recently read pages for every process).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medtrans import defaults
from medtrans.data.blocks import BlockArray, Runs, block_shape, write_blocks
from medtrans.errors import InputError

__all__ = ["CACHE_VERSION", "BlockArray", "DiskCache", "Runs", "default_cache_dir"]

CACHE_VERSION = 4
"""Raised whenever the preprocessing code changes what an entry holds: entries of other versions are not read."""
_HEAD_BYTES = 2**16
logger = logging.getLogger("medtrans.data")


def default_cache_dir() -> Path:
    """``$MEDTRANS_CACHE_DIR``, else ``$XDG_CACHE_HOME/medtrans`` (``~/.cache/medtrans``)."""
    if os.environ.get("MEDTRANS_CACHE_DIR"):
        return Path(os.environ["MEDTRANS_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "medtrans"


@dataclass(frozen=True)
class Entry:
    """One complete cache entry: ``images`` per key on disk, the ``foreground`` indices in memory, and its metadata."""

    images: dict[str, BlockArray]
    foreground: Runs
    meta: dict[str, Any]


class DiskCache:
    """Preprocessed subjects under ``root`` (created when first written).

    Args:
        root: the cache folder; several runs, and several processes of one run, may share it.
        block: the blocks images are stored in (:func:`~medtrans.data.blocks.block_shape` of the patch; default that
            of the default 3D patch).
    """

    def __init__(self, root: str | Path, block: Sequence[int] | None = None) -> None:
        self.root = Path(root).expanduser()
        self.block = tuple(int(b) for b in (block or block_shape(defaults.PATCH_SIZE[3])))

    def key(self, records: Mapping[str, Any], preprocessing: Mapping[str, Any], foreground_threshold: float) -> str:
        """The entry name for one subject's ``records`` (``{key: ImageRecord}``), their preprocessing and the block."""

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
            "block": list(self.block),
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
            images = {k: BlockArray.open(folder / f"{k}.blocks") for k in meta["keys"]}
            foreground = Runs.load(folder / "foreground.npy")
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
            for name, array in images.items():
                _write(partial / f"{name}.blocks", lambda f, a=array: write_blocks(f, a, self.block))
            _write(partial / "foreground.npy", Runs.from_indices(foreground).save)
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


def _write(path: Path, write: Callable[[Any], None]) -> None:
    """Write one file of an entry with ``write(open file)``, and flush it to the disk."""
    with open(path, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
