"""Arrays of the on-disk cache: volumes stored as contiguous blocks and read region by region, and the sampler's
foreground held in memory as runs of indices.

A C-order volume holds each row of a 3D patch in its own place: a 64³ patch of a 1 mm brain touches 4,096 rows of
256 bytes, each on its own 4 KiB page (16 MiB of page cache per 1 MiB patch). A block file holds the volume as
contiguous blocks instead (:data:`medtrans.defaults.CACHE_BLOCK`: 16³ float32 = 16 KiB for 3D patches, 64×64×1 for
axial slices), in C order over the grid of blocks, the blocks at the far edges padded with zeros to the full block. A
64³ patch then overlaps at most 5×5×5 blocks, in 25 runs of consecutive blocks (2 MiB at most), and is copied out of
them piece by piece (at most 27 pieces, one copy of the patch's own bytes).

Block files are read through shared read-only mappings (:class:`_Mappings`): at most 128 open, and once their
pages resident in the process pass 1 GiB every mapping drops them (``MADV_DONTNEED``), so the process's resident
memory stays bounded however many patches a run cuts (the kernel's page cache keeps recently read pages for every
process). The mappings read no more than asked from the disk (``MADV_RANDOM``), and before a patch is copied, its runs
of blocks are asked for at once (``MADV_WILLNEED``), so blocks that are not in the page cache are read in parallel.

The foreground indices a patch centre is drawn from are not read from the disk per patch (each draw would be a random
4 KiB read: about as long as the patch's blocks): :class:`Runs` holds them in memory as runs of consecutive indices.

Block file: a 4 KiB header (a magic line, then JSON ``{"shape", "block", "dtype"}`` padded with spaces), then the
blocks. :meth:`BlockArray.open` refuses a file whose size is not what its header says (a truncated copy).
"""

from __future__ import annotations

import itertools
import json
import mmap
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from medtrans import defaults

__all__ = ["BlockArray", "Runs", "block_shape", "write_blocks"]

MAGIC = b"\x93MEDTRANS-BLOCKS-1\n"
HEADER_BYTES = 4096


def block_shape(patch_size: Sequence[int]) -> tuple[int, ...]:
    """The block that suits ``patch_size``: :data:`~medtrans.defaults.CACHE_BLOCK` of its dimensionality, with a side
    of 1 along the axis of a 2D patch's 1 (so a slice reads only its own plane)."""
    if 1 in patch_size:
        return tuple(1 if p == 1 else defaults.CACHE_BLOCK[2] for p in patch_size)
    return (defaults.CACHE_BLOCK[3],) * len(patch_size)


class _Mappings:
    """The open read-only mappings of cache files, shared by every array of the process.

    At most :data:`MAX_OPEN` files stay mapped (least recently used closed first, once no view still holds it). Every
    :data:`CHECK_BYTES` of reads, when the process's resident file pages (``/proc/self/statm``; where there is none,
    the bytes read since the last release) exceed :data:`RELEASE_BYTES`, every mapping drops its pages
    (``MADV_DONTNEED``; the next read faults them in again from the kernel's page cache). The pages a read maps are
    measured, not counted: the kernel maps more than the blocks asked for (fault-around), about 3 times more here.
    """

    MAX_OPEN = 128
    RELEASE_BYTES = 2**30
    CHECK_BYTES = 2**26

    def __init__(self) -> None:
        self._open: OrderedDict[tuple[Path, int, int], mmap.mmap] = OrderedDict()
        self._touched = 0  # bytes read since the last check
        self._counted = 0  # since the last release
        self._lock = threading.Lock()

    def get(self, path: Path, stamp: tuple[int, int]) -> mmap.mmap:
        """The mapping of ``path`` as it was when opened (``stamp``: its inode and modification time; a file replaced
        since, e.g. a rebuilt entry, gets a mapping of its own)."""
        key = (path, *stamp)
        with self._lock:
            if key in self._open:
                self._open.move_to_end(key)
                return self._open[key]
            with open(path, "rb") as f:
                mapped = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
            if hasattr(mmap, "MADV_RANDOM"):
                mapped.madvise(mmap.MADV_RANDOM)  # a page not in the page cache: read alone, not 8 MiB around it
            self._open[key] = mapped
            while len(self._open) > self.MAX_OPEN:
                self._open.popitem(last=False)  # closed once no view still holds it
            return mapped

    def touched(self, nbytes: int) -> None:
        """Count ``nbytes`` a read brought in; every :data:`CHECK_BYTES`, release every mapping's pages when the
        resident file pages exceed :data:`RELEASE_BYTES`."""
        with self._lock:
            self._touched += nbytes
            if self._touched < self.CHECK_BYTES:
                return
            self._counted += self._touched
            self._touched = 0
            resident = _resident_file_bytes()
            over = (self._counted if resident is None else resident) > self.RELEASE_BYTES
            if over and hasattr(mmap, "MADV_DONTNEED"):
                for mapped in self._open.values():
                    mapped.madvise(mmap.MADV_DONTNEED)
                self._counted = 0


def _resident_file_bytes() -> int | None:
    """The process's resident file-backed (and shared) memory, from ``/proc/self/statm``; ``None`` without it."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[2]) * mmap.PAGESIZE
    except (OSError, ValueError, IndexError):
        return None


_MAPPINGS = _Mappings()


def write_blocks(f: BinaryIO, array: np.ndarray, block: Sequence[int]) -> None:
    """Write ``array`` to the open file ``f`` as a block file of ``block``-sized blocks."""
    array = np.asarray(array)
    block = tuple(int(b) for b in block)
    if len(block) != array.ndim or min(block) < 1:
        raise ValueError(f"block {block} does not suit an array of shape {array.shape}")
    header = json.dumps({"shape": list(array.shape), "block": list(block), "dtype": array.dtype.str}).encode()
    f.write(MAGIC + header.ljust(HEADER_BYTES - len(MAGIC) - 1) + b"\n")
    grid = [-(-s // b) for s, b in zip(array.shape, block)]
    order = [*range(0, 2 * array.ndim, 2), *range(1, 2 * array.ndim, 2)]
    for i in range(grid[0]):  # one slab of blocks at a time: little memory beyond the array
        slab = np.zeros((block[0], *(g * b for g, b in zip(grid[1:], block[1:]))), array.dtype)
        part = array[i * block[0] : (i + 1) * block[0]]
        slab[tuple(slice(0, s) for s in part.shape)] = part
        split = slab.reshape([x for g, b in zip([1, *grid[1:]], block) for x in (g, b)])
        f.write(np.ascontiguousarray(split.transpose(order)).tobytes())


def _pieces(start: int, stop: int, first: int, count: int, side: int) -> list[tuple[int, int, int, int, int]]:
    """One axis of a region ``[start, stop)`` over ``count`` blocks of ``side`` from block ``first``: at most three
    pieces ``(first block, end block, start within each block, end within, start in the region)`` — a partial first
    block, the whole blocks, a partial last block."""
    low, high = start - first * side, stop - (first + count - 1) * side
    if count == 1:
        return [(0, 1, low, high, 0)]
    out, whole = [], [1 if low else 0, count - 1 if high < side else count]
    if low:
        out.append((0, 1, low, side, 0))
    if whole[1] > whole[0]:
        out.append((whole[0], whole[1], 0, side, (side - low) if low else 0))
    if high < side:
        out.append((count - 1, count, 0, high, stop - start - high))
    return out


@dataclass(frozen=True)
class BlockArray:
    """A block file, read region by region; indexing with integers and unit-step slices returns an in-memory copy of
    the region (other indices read the whole array first)."""

    path: Path
    shape: tuple[int, ...]
    block: tuple[int, ...]
    dtype: np.dtype
    stamp: tuple[int, int] = (0, 0)

    @classmethod
    def open(cls, path: Path) -> BlockArray:
        """Read the header of ``path``; raises ``ValueError`` when it is not a block file or its size does not match
        its header (a truncated file)."""
        with open(path, "rb") as f:
            head = f.read(HEADER_BYTES)
        if not head.startswith(MAGIC) or len(head) < HEADER_BYTES:
            raise ValueError(f"{path} is not a block file")
        info = json.loads(head[len(MAGIC) :])
        stat = path.stat()
        array = cls(path, tuple(int(s) for s in info["shape"]), tuple(int(b) for b in info["block"]),
                    np.dtype(info["dtype"]), (stat.st_ino, stat.st_mtime_ns))
        if len(array.block) != len(array.shape) or stat.st_size != HEADER_BYTES + array.nbytes:
            raise ValueError(f"{path} is {stat.st_size} bytes, not what its header says")
        return array

    @property
    def grid(self) -> tuple[int, ...]:
        """Blocks along each axis."""
        return tuple(-(-s // b) for s, b in zip(self.shape, self.block))

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    @property
    def nbytes(self) -> int:
        """The blocks' bytes on disk (the array padded to whole blocks)."""
        return int(np.prod(self.grid)) * int(np.prod(self.block)) * self.dtype.itemsize

    def __getitem__(self, index: Any) -> np.ndarray:
        box = _box(index, self.shape)
        if box is None:
            return self.read()[index]
        starts, stops, squeeze = box
        out = np.empty([b - a for a, b in zip(starts, stops)], self.dtype)
        if not out.size:
            return out[squeeze]
        mapped = _MAPPINGS.get(self.path, self.stamp)
        blocks = np.frombuffer(mapped, self.dtype, self.nbytes // self.dtype.itemsize, HEADER_BYTES)
        blocks = blocks.reshape(*self.grid, *self.block)
        first = [a // b for a, b in zip(starts, self.block)]
        count = [(z - 1) // b - f + 1 for z, b, f in zip(stops, self.block, first)]
        block_bytes = int(np.prod(self.block)) * self.dtype.itemsize
        if hasattr(mmap, "MADV_WILLNEED"):  # the runs of consecutive blocks it overlaps, asked for all at once
            for lead in itertools.product(*(range(f, f + c) for f, c in zip(first[:-1], count[:-1]))):
                at = HEADER_BYTES + int(np.ravel_multi_index((*lead, first[-1]), self.grid)) * block_bytes
                page = at - at % mmap.PAGESIZE
                mapped.madvise(mmap.MADV_WILLNEED, page, at - page + count[-1] * block_bytes)
        runs = blocks[tuple(slice(f, f + c) for f, c in zip(first, count))]
        n = len(self.shape)
        order = [x for d in range(n) for x in (d, n + d)]  # (blocks, within a block) per axis
        for piece in itertools.product(*map(_pieces, starts, stops, first, count, self.block)):
            source = runs[tuple(slice(p[0], p[1]) for p in piece) + tuple(slice(p[2], p[3]) for p in piece)]
            target = out[tuple(slice(p[4], p[4] + (p[1] - p[0]) * (p[3] - p[2])) for p in piece)]
            target.reshape([x for p in piece for x in (p[1] - p[0], p[3] - p[2])])[...] = source.transpose(order)
        _MAPPINGS.touched(int(np.prod(count)) * block_bytes)
        return out[squeeze]

    def read(self) -> np.ndarray:
        """The whole array, in memory."""
        return self[...]


@dataclass(frozen=True)
class Runs:
    """Sorted flat indices (the voxels a foreground sampler draws from) held in memory as runs of consecutive values:
    a brain's foreground is a few runs per row of the grid, a fraction of the size of the index array. Indexing with an
    integer gives what the index array would (so the same draws pick the same voxels); other indices read them all.

    Attributes:
        starts: the first index of each run.
        ends: the number of indices up to the end of each run (cumulative lengths).
    """

    starts: np.ndarray
    ends: np.ndarray

    @classmethod
    def from_indices(cls, indices: np.ndarray) -> Runs:
        """The runs of the sorted ``indices``, in their dtype (int32 for grids under 2³¹ voxels)."""
        indices = np.asarray(indices)
        breaks = np.flatnonzero(np.diff(indices) != 1) + 1
        first = np.concatenate([[0], breaks]).astype(np.int64) if indices.size else np.zeros(0, np.int64)
        ends = np.append(breaks, indices.size) if indices.size else np.zeros(0, np.int64)
        return cls(indices[first], ends.astype(indices.dtype))

    @property
    def size(self) -> int:
        return int(self.ends[-1]) if self.ends.size else 0

    @property
    def nbytes(self) -> int:
        return self.starts.nbytes + self.ends.nbytes

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, (int, np.integer)) and not isinstance(index, (bool, np.bool_)):
            k = int(index) + (self.size if index < 0 else 0)
            if not 0 <= k < self.size:
                raise IndexError(f"index {int(index)} is out of bounds for {self.size} indices")
            run = int(np.searchsorted(self.ends, k, side="right"))
            return self.starts[run] + (k - (int(self.ends[run - 1]) if run else 0))
        return self.read()[index]

    def read(self) -> np.ndarray:
        """Every index, in memory."""
        before = np.concatenate([[0], self.ends[:-1]]).astype(np.int64)
        lengths = self.ends.astype(np.int64) - before
        offsets = np.repeat(self.starts.astype(np.int64) - before, lengths)
        return (offsets + np.arange(self.size)).astype(self.starts.dtype)

    def save(self, f: BinaryIO) -> None:
        """Write the runs to the open file ``f`` as one ``.npy`` array of ``(starts, ends)`` rows."""
        np.save(f, np.stack([self.starts, self.ends], axis=1))

    @classmethod
    def load(cls, path: Path) -> Runs:
        """The runs :meth:`save` wrote to ``path``; raises ``ValueError`` when the file is not such an array (e.g. a
        truncated copy)."""
        try:
            rows = np.load(path, allow_pickle=False)
        except EOFError as err:
            raise ValueError(f"{path} is truncated ({err})") from None
        if rows.ndim != 2 or rows.shape[1] != 2 or rows.dtype.kind != "i":
            raise ValueError(f"{path} does not hold foreground runs")
        runs = cls(np.ascontiguousarray(rows[:, 0]), np.ascontiguousarray(rows[:, 1]))
        if runs.ends.size and (runs.ends[0] < 1 or np.any(np.diff(runs.ends) < 1)):
            raise ValueError(f"{path} does not hold foreground runs")
        return runs


def _box(index: Any, shape: Sequence[int]) -> tuple[list[int], list[int], tuple[Any, ...]] | None:
    """``(starts, stops, squeeze)`` of a basic index of integers and unit-step slices (``squeeze`` drops the axes an
    integer indexes), or ``None`` for any other index."""
    index = index if isinstance(index, tuple) else (index,)
    ellipsis = [n for n, i in enumerate(index) if i is Ellipsis]
    if len(ellipsis) > 1:
        return None
    if ellipsis:
        at = ellipsis[0]
        index = (*index[:at], *[slice(None)] * (len(shape) - len(index) + 1), *index[at + 1 :])
    if len(index) > len(shape):
        return None
    index = (*index, *[slice(None)] * (len(shape) - len(index)))
    starts, stops, squeeze = [], [], []
    for i, dim in zip(index, shape):
        if isinstance(i, (int, np.integer)) and not isinstance(i, (bool, np.bool_)):
            i = int(i) + (dim if i < 0 else 0)
            if not 0 <= i < dim:
                return None  # numpy raises the IndexError
            starts.append(i), stops.append(i + 1), squeeze.append(0)
        elif isinstance(i, slice) and i.step in (None, 1):
            a, b, _ = i.indices(dim)
            starts.append(a), stops.append(max(a, b)), squeeze.append(slice(None))
        else:
            return None
    return starts, stops, tuple(squeeze)
