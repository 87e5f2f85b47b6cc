"""The on-disk preprocessed cache: the same batches as in memory, built once, invalidated by any change, whole or
absent, shared by runs and ranks."""

import itertools
import os
import threading

import nibabel as nib
import numpy as np
import pytest
import torch

import medtrans.data.blocks as blocks_module
import medtrans.data.cache as cache_module
import medtrans.data.stream as stream_module
import medtrans.data.subjects as subjects_module
from medtrans.data import ImageRecord, TrainStream
from medtrans.data.blocks import BlockArray, Runs, block_shape, write_blocks
from medtrans.data.cache import DiskCache
from medtrans.errors import InputError


@pytest.fixture()
def records(synthetic_brains, tmp_path):
    """Copies of two synthetic T1w and two T2w (files a test may change), 98x116x94."""
    out = {}
    for name, path in {"a0": "A/a00.nii.gz", "a1": "A/a01.nii.gz", "b0": "B/b00.nii.gz", "b1": "B/b01.nii.gz"}.items():
        nib.save(nib.load(synthetic_brains / path), tmp_path / f"{name}.nii.gz")
        out[name] = ImageRecord(name, tmp_path / f"{name}.nii.gz")
    return out


def _stream(records, storage, cache_dir, patch=(24, 24, 24), seed=0, **config):
    return TrainStream([records["a0"], records["a1"]], [records["b0"], records["b1"]],
                       {"patch_size": patch, "storage": storage, "cache_dir": cache_dir, "num_workers": 2, **config},
                       batch_size=2, seed=seed)


def _batches(stream, n, start=0):
    stream.resume_at(start)
    return list(itertools.islice(stream, n))


def _entries(root):
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def _never(*args, **kwargs):
    raise AssertionError("a volume was read")


@pytest.mark.parametrize("patch,sampler", [((24, 24, 24), "foreground"), ((24, 24, 24), "uniform"),
                                           ((40, 40, 1), "foreground"), ((120, 24, 24), "foreground"),
                                           ((90, 100, 17), "uniform"), ((33, 1, 80), "uniform")])
def test_the_same_batches_in_memory_and_on_disk(records, tmp_path, patch, sampler):
    memory = _stream(records, "memory", None, patch, seed=3, sampler_type=sampler)
    disk = _stream(records, "disk", tmp_path / "cache", patch, seed=3, sampler_type=sampler)
    if patch[0] <= 98:  # a volume smaller than the patch is padded and held in memory
        assert all(isinstance(t, BlockArray) and t.block == block_shape(patch)
                   for d in disk.domains.values() for v in d for t in v.images.values())
    for x, y in zip(_batches(memory, 6), _batches(disk, 6)):
        assert all(torch.equal(x[k], y[k]) for k in "ab")
    # exact resume: batch 4 of a stream resumed there is batch 4 of the first run
    assert all(torch.equal(_batches(disk, 1, 4)[0][k], _batches(memory, 1, 4)[0][k]) for k in "ab")
    for (i, m), (j, n) in zip(memory.foreground_volumes("a"), disk.foreground_volumes("a")):
        assert np.array_equal(i, j) and np.array_equal(m, n)
    assert memory.fingerprint() == disk.fingerprint() and memory.target_intensity() == disk.target_intensity()


def test_auto_holds_a_set_over_the_budget_on_disk_and_reuses_the_entries(records, tmp_path, monkeypatch, caplog):
    cache = tmp_path / "cache"
    caplog.set_level("INFO", "medtrans.data")
    small = _stream(records, "auto", cache)
    assert not cache.exists() and "volumes in memory" in caplog.text  # it fits: nothing is written
    over = _stream(records, "auto", cache, memory_gb=0.01)  # 4 volumes of 4 MB each
    assert len(_entries(cache)) == 4 and "on disk in" in caplog.text
    for x, y in zip(_batches(small, 3), _batches(over, 3)):
        assert all(torch.equal(x[k], y[k]) for k in "ab")
    monkeypatch.setattr(subjects_module, "read_volume", _never)  # a second run reads no input file
    again = _stream(records, "disk", cache)
    assert all(torch.equal(x[k], y[k]) for x, y in zip(_batches(small, 3), _batches(again, 3)) for k in "ab")
    assert len(_entries(cache)) == 4


def test_a_changed_input_or_preprocessing_gets_a_new_entry(records, tmp_path):
    cache = tmp_path / "cache"
    first = _stream(records, "disk", cache)
    assert len(_entries(cache)) == 4
    # the same file name, other content (a rewritten a0: the intensities doubled)
    image = nib.load(records["a0"].image)
    nib.save(nib.Nifti1Image(np.asarray(image.dataobj) * 2.0 + 5.0, image.affine), records["a0"].image)
    os.utime(records["a0"].image, ns=(1, 1))  # even with an older time stamp
    changed = _stream(records, "disk", cache)
    assert len(_entries(cache)) == 5
    assert changed.domains["a"][0].stats != first.domains["a"][0].stats
    TrainStream([records["a0"], records["a1"]], [records["b0"], records["b1"]],
                {"patch_size": (24, 24, 24), "storage": "disk", "cache_dir": cache},
                preprocessing_a={"spacing": (3.0, 3.0, 3.0)})
    assert len(_entries(cache)) == 7  # domain A resampled: two new entries; B unchanged
    TrainStream([records["a0"], records["a1"]], [records["b0"], records["b1"]],
                {"patch_size": (24, 24, 24), "storage": "disk", "cache_dir": cache, "foreground_threshold": -0.5})
    assert len(_entries(cache)) == 11


def test_a_bad_input_is_named_and_leaves_no_entry(records, tmp_path):
    cache = tmp_path / "cache"
    good = records["a0"].image.read_bytes()
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(good[: len(good) // 2])  # truncated
    with pytest.raises(InputError, match="bad.nii.gz"):
        TrainStream([records["a0"], ImageRecord("bad", bad)], [records["b0"]],
                    {"patch_size": (24, 24, 24), "storage": "disk", "cache_dir": cache, "num_workers": 1})
    entries = _entries(cache)
    assert not [e for e in entries if e.startswith(".partial")]
    assert len(entries) <= 1  # at most the good volume read before it


def test_an_interrupted_write_leaves_nothing_a_later_run_trusts(records, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    real_write, calls = cache_module._write, []

    def dying(path, write):
        calls.append(path.name)
        if len(calls) == 2:  # the second file of the first entry (its foreground, after its image's blocks)
            with open(path, "wb") as f:
                f.write(b"half")
            raise OSError(28, "No space left on device")
        return real_write(path, write)

    monkeypatch.setattr(cache_module, "_write", dying)
    with pytest.raises(InputError, match=r"cache: the training cache cannot be written there \(No space left"):
        _stream(records, "disk", cache, num_workers=1)
    assert _entries(cache) == [] and calls == ["a.blocks", "foreground.npy"]
    monkeypatch.setattr(cache_module, "_write", real_write)
    memory, disk = _stream(records, "memory", None), _stream(records, "disk", cache)
    assert all(torch.equal(x[k], y[k]) for x, y in zip(_batches(memory, 3), _batches(disk, 3)) for k in "ab")


def test_a_damaged_entry_is_rebuilt(records, tmp_path, caplog):
    cache = tmp_path / "cache"
    memory = _stream(records, "memory", None)
    _stream(records, "disk", cache)
    victim = cache / _entries(cache)[0] / "a.blocks"
    if not victim.exists():
        victim = victim.with_name("b.blocks")
    victim.write_bytes(victim.read_bytes()[:-100])  # truncated on disk: its last block is short
    with caplog.at_level("WARNING", "medtrans.data"):
        rebuilt = _stream(records, "disk", cache)
    assert "is damaged" in caplog.text
    assert all(torch.equal(x[k], y[k]) for x, y in zip(_batches(memory, 4), _batches(rebuilt, 4)) for k in "ab")


def test_two_builders_of_one_entry_end_with_one_complete_copy(tmp_path):
    cache, barrier, results = DiskCache(tmp_path / "cache"), threading.Barrier(2), []
    images = {"a": np.arange(24, dtype=np.float32).reshape(2, 3, 4)}

    def build():
        barrier.wait()  # both have found no entry and build it at the same time
        return images, np.array([1, 5], dtype=np.int32), {"subject_id": "s"}

    threads = [threading.Thread(target=lambda: results.append(cache.put("k", build))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 2 and _entries(cache.root) == ["k"]
    assert all(np.array_equal(r.images["a"].read(), images["a"]) for r in results)
    assert np.array_equal(results[0].images["a"][1, :, 2:], images["a"][1, :, 2:])


def test_each_rank_builds_and_reads_only_its_shard(records, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    recs = [ImageRecord(f"s{i}", records["a0" if i % 2 else "a1"].image) for i in range(4)]
    held = []
    for rank in range(2):
        monkeypatch.setattr(stream_module, "rank_and_world", lambda rank=rank: (rank, 2))
        stream = TrainStream(recs, recs, {"patch_size": (24, 24, 24), "storage": "disk", "cache_dir": cache}, seed=1)
        held.append({v.subject_id for v in stream.domains["a"]})
    assert held[0].isdisjoint(held[1]) and held[0] | held[1] == {r.subject_id for r in recs}


def test_an_unwritable_cache_folder_is_named(records, tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    with pytest.raises(InputError, match=r"file/cache: the training cache cannot be written there"):
        _stream(records, "disk", blocked / "cache")


def test_mappings_stay_bounded_and_reads_outlive_them(tmp_path, monkeypatch):
    mappings = blocks_module._Mappings()
    monkeypatch.setattr(blocks_module, "_MAPPINGS", mappings)
    monkeypatch.setattr(mappings, "MAX_OPEN", 2)
    monkeypatch.setattr(mappings, "RELEASE_BYTES", 1)  # every read drops every mapping's pages
    monkeypatch.setattr(mappings, "CHECK_BYTES", 1)
    arrays, disk = [], []
    for i in range(3):
        arrays.append(np.random.default_rng(i).random((5, 6, 7), dtype=np.float32))
        with open(tmp_path / f"{i}.blocks", "wb") as f:
            write_blocks(f, arrays[-1], (2, 4, 3))
        disk.append(BlockArray.open(tmp_path / f"{i}.blocks"))
    assert len(mappings._open) == 0  # opening reads the header only
    for _ in range(2):  # each file mapped again once closed, and every read after a release is right
        assert all(np.array_equal(d[1:4, :, 2:5], a[1:4, :, 2:5]) for d, a in zip(disk, arrays))
        assert all(np.array_equal(d[2], a[2]) and np.array_equal(d.read(), a) for d, a in zip(disk, arrays))
        assert len(mappings._open) == 2
    (tmp_path / "0.blocks").write_bytes((tmp_path / "0.blocks").read_bytes()[:-4])
    with pytest.raises(ValueError, match="not what its header says"):
        BlockArray.open(tmp_path / "0.blocks")


@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_foreground_runs_give_what_the_index_array_gives(tmp_path, dtype):
    """Every draw picks the voxel the index array would; saved and loaded whole; a truncated file is refused."""
    rng = np.random.default_rng(0)
    mask = np.zeros((30, 20, 25), bool)
    mask[5:25, 3:17, 4:21] = rng.random((20, 14, 17)) < 0.9  # rows broken into runs, runs across row ends
    mask[0, 0, 0] = mask[-1, -1, -1] = True  # the first and last voxel
    indices = np.flatnonzero(mask).astype(dtype)
    runs = Runs.from_indices(indices)
    assert runs.size == indices.size and runs.nbytes < indices.nbytes / 2
    assert [runs[k] for k in range(indices.size)] == indices.tolist() and runs[-1] == indices[-1]
    assert np.array_equal(runs.read(), indices) and runs.read().dtype == dtype and np.array_equal(runs[:], indices)
    with pytest.raises(IndexError):
        runs[indices.size]
    with open(tmp_path / "f.npy", "wb") as f:
        runs.save(f)
    loaded = Runs.load(tmp_path / "f.npy")
    assert np.array_equal(loaded.read(), indices)
    (tmp_path / "f.npy").write_bytes((tmp_path / "f.npy").read_bytes()[:-4])
    with pytest.raises(ValueError):
        Runs.load(tmp_path / "f.npy")
    empty = Runs.from_indices(np.zeros(0, dtype))
    assert empty.size == 0 and empty.read().size == 0


@pytest.mark.parametrize("shape,block", [((37, 29, 23), (16, 16, 16)), ((37, 29, 23), (8, 8, 1)),
                                         ((5, 6, 7), (16, 16, 16)), ((40, 33, 50), (7, 5, 3)), ((30, 20), (8, 8))])
def test_a_block_file_reads_any_region_as_numpy_does(tmp_path, shape, block):
    """Regions inside one block, straddling block boundaries, or reaching the padded edge blocks."""
    rng = np.random.default_rng(0)
    array = rng.random(shape, dtype=np.float32)
    with open(tmp_path / "x.blocks", "wb") as f:
        write_blocks(f, array, block)
    disk = BlockArray.open(tmp_path / "x.blocks")
    assert (tmp_path / "x.blocks").stat().st_size == 4096 + int(np.prod([-(-s // b) * b for s, b in zip(shape, block)])) * 4
    indices = [..., 1, -1, (slice(None), 2), (..., 0), np.s_[::2], (slice(3, 3),), (slice(-9, None), slice(1, -1))]
    for _ in range(200):
        corner = [int(rng.integers(s)) for s in shape]
        stop = [int(rng.integers(c, s + 1)) for c, s in zip(corner, shape)]
        indices.append(tuple(slice(c, z) if rng.random() < 0.8 else c for c, z in zip(corner, stop)))
    if all(s >= 2 * b for s, b in zip(shape, block)):  # one whole block; one block's last voxel to the next one's first
        indices += [tuple(slice(b, 2 * b) for b in block), tuple(slice(b - 1, b + 1) for b in block)]
    for index in indices:
        got, want = disk[index], array[index]
        assert got.shape == want.shape and np.array_equal(got, want), index
