"""The training stream (volumes in memory): shapes, sampling, and the guarantees resume and torchrun rely on."""

import itertools

import nibabel as nib
import numpy as np
import pytest
import torch

import medtrans.data.stream as stream_module
import medtrans.data.subjects as subjects_module
from medtrans.data import ImageRecord, PatchConfig, TrainStream
from medtrans.data.intensity import fit_intensity
from medtrans.errors import InputError
from tests.conftest import synthetic_pair

SYNTHETIC = {"t1": "A/a00.nii.gz", "t2": "B/b00.nii.gz", "t2b": "B/b01.nii.gz"}


@pytest.fixture(scope="module")
def templates(synthetic_brains):
    """Brains of the embedded synthetic dataset (98×116×94, 2 mm, skull-stripped): a T1w, and the T2w of two other
    subjects; small volumes that load fast."""
    return {name: ImageRecord(name, synthetic_brains / path) for name, path in SYNTHETIC.items()}


def _stream(templates, patch_size, sampler_type="uniform", seed=0, batch_size=2, **config):
    return TrainStream([templates["t1"]], [templates["t2"], templates["t2b"]],
                       {"patch_size": patch_size, "sampler_type": sampler_type, **config}, batch_size=batch_size, seed=seed)


def _take(stream, n):
    return list(itertools.islice(stream, n))


def test_unpaired_3d_patches_from_both_domains(templates):
    for batch in _take(_stream(templates, (32, 24, 16)), 3):
        assert set(batch) == {"a", "b"}
        assert batch["a"].shape == batch["b"].shape == (2, 1, 32, 24, 16)
        assert batch["a"].dtype == torch.float32 and batch["a"].min() >= -1 and batch["a"].max() <= 1


def test_2d_slices_cut_from_volumes(templates):
    stream = _stream(templates, (48, 40, 1), batch_size=4)
    assert stream.spatial_dims == 2
    assert next(stream)["a"].shape == next(stream)["b"].shape == (4, 1, 48, 40)


def test_batches_depend_on_the_seed_alone(templates):
    first = _take(_stream(templates, (16, 16, 16), seed=3, num_workers=0, prefetch=0), 4)
    threaded = _take(_stream(templates, (16, 16, 16), seed=3, num_workers=3, prefetch=8), 4)
    torch.rand(100)  # what the training step draws does not matter
    again = _take(_stream(templates, (16, 16, 16), seed=3, num_workers=1, prefetch=2), 4)
    other = _take(_stream(templates, (16, 16, 16), seed=4), 4)
    assert all(torch.equal(x[k], y[k]) and torch.equal(x[k], z[k]) for x, y, z in zip(first, threaded, again) for k in "ab")
    assert not all(torch.equal(x["a"], y["a"]) for x, y in zip(first, other))


def test_resume_at_continues_with_the_same_batches(templates):
    one_go = _take(_stream(templates, (16, 16, 16), seed=5), 7)
    resumed = _stream(templates, (16, 16, 16), seed=5)
    _take(resumed, 2)
    resumed.resume_at(4)
    assert all(torch.equal(x[k], y[k]) for x, y in zip(one_go[4:], _take(resumed, 3)) for k in "ab")
    resumed.resume_at(1)  # backwards too (e.g. an older checkpoint)
    assert torch.equal(next(resumed)["a"], one_go[1]["a"])


def test_foreground_sampling_reduces_background_patches(templates):
    def background_fraction(sampler_type):
        batches = _take(_stream(templates, (16, 16, 16), sampler_type), 32)
        # the skull-stripped background maps to -1, below the sampler's threshold of -0.9
        return torch.stack([(b["a"] <= -0.9).float().mean() for b in batches]).mean().item()

    uniform, foreground = background_fraction("uniform"), background_fraction("foreground")
    assert foreground < 0.5 * uniform, (uniform, foreground)


def test_paired_patches_come_from_the_same_place(templates):
    stream = TrainStream([templates["t1"]], [ImageRecord("t1", templates["t1"].image)], {"patch_size": (16, 16, 16)},
                         batch_size=2, paired=True)
    batch = next(stream)
    assert torch.equal(batch["a"], batch["b"])


def test_small_volumes_are_padded_and_bad_configs_rejected(templates):
    batch = next(_stream(templates, (104, 120, 8), batch_size=1))  # larger than the 98×116 volume
    assert batch["a"].shape == (1, 1, 104, 120, 8)
    with pytest.raises(ValueError, match="sampler_type"):
        PatchConfig(sampler_type="random")
    with pytest.raises(ValueError, match="more than one side of 1"):
        PatchConfig(patch_size=(64, 1, 1))
    with pytest.raises(TypeError, match="samples_per_volume"):  # the torchio queue's settings are gone
        PatchConfig(samples_per_volume=8)


def test_subjects_with_and_without_masks_share_one_domain(tmp_path, synthetic_brains):
    t1 = synthetic_pair(synthetic_brains)[0]
    image = nib.load(t1)
    mask = tmp_path / "mask.nii.gz"
    nib.save(nib.Nifti1Image((np.asarray(image.dataobj) > 0.2).astype(np.uint8), image.affine), mask)
    records = [ImageRecord("with", t1, mask), ImageRecord("without", t1)]
    stream = TrainStream(records, records, {"patch_size": (16, 16, 16), "sampler_type": "foreground"}, batch_size=4)
    assert next(stream)["a"].shape == (4, 1, 16, 16, 16)


def test_target_intensity_comes_from_the_volumes_in_memory(templates):
    stream = _stream(templates, (16, 16, 16))
    expected = np.mean([fit_intensity({"type": "percentile"}, nib.load(templates[k].image).get_fdata()).range
                        for k in ("t2", "t2b")], axis=0)
    target = stream.target_intensity()
    assert target["type"] == "window" and np.allclose([target["low"], target["high"]], expected, rtol=1e-5)


@pytest.mark.parametrize("spec, mapped_back", [({"type": "zscore", "sigmas": 3}, "window"), ({"type": "zscore"}, "source")])
def test_target_intensity_of_zscored_targets(templates, spec, mapped_back):
    stream = TrainStream([templates["t1"]], [templates["t2"], templates["t2b"]], {"patch_size": (16, 16, 16)},
                         preprocessing_b={"intensity": spec})
    target = stream.target_intensity()
    assert target["type"] == mapped_back
    if mapped_back == "window":  # the mean of the training volumes' mean ± 3σ ranges
        expected = np.mean([fit_intensity(spec, nib.load(templates[k].image).get_fdata()).range for k in ("t2", "t2b")],
                           axis=0)
        assert np.allclose([target["low"], target["high"]], expected, rtol=1e-5)


def test_ranks_hold_disjoint_shards(templates, monkeypatch):
    records = [ImageRecord(f"s{i}", templates["t1"].image) for i in range(5)]
    shards = []
    for rank in range(2):
        monkeypatch.setattr(stream_module, "rank_and_world", lambda rank=rank: (rank, 2))
        stream = TrainStream(records, records, {"patch_size": (16, 16, 16)}, seed=3)
        shards.append({v.subject_id for v in stream.domains["a"]})
    assert shards[0] | shards[1] == {r.subject_id for r in records} and not shards[0] & shards[1]
    assert sorted(map(len, shards)) == [2, 3]
    monkeypatch.setattr(stream_module, "rank_and_world", lambda: (0, 8))
    with pytest.raises(InputError, match="5 subjects cannot be shared by 8 processes"):
        TrainStream(records, records, {"patch_size": (16, 16, 16)})


def test_a_training_set_over_the_memory_budget_is_refused_before_reading(templates, monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("a volume was read")

    monkeypatch.setattr(subjects_module, "read_volume", never)
    with pytest.raises(InputError, match=r"memory_gb: domain A: 1 volumes need about 0.0 GiB .* budget of 1e-05 GiB"):
        _stream(templates, (16, 16, 16), memory_gb=1e-5, storage="memory")


def test_a_bad_volume_in_a_domain_is_named_before_training(templates, tmp_path):
    good = templates["t1"].image
    bad = tmp_path / "bad.nii.gz"
    nib.save(nib.load(good), tmp_path / "full.nii.gz")
    bad.write_bytes((tmp_path / "full.nii.gz").read_bytes()[:20000])  # truncated
    with pytest.raises(InputError, match="bad.nii.gz"):
        TrainStream([ImageRecord("good", good), ImageRecord("bad", bad)], [templates["t2"]], {"patch_size": (16, 16, 16)})


def test_a_process_ending_with_a_live_prefetch_thread_exits_cleanly(templates):
    import subprocess
    import sys

    script = (f"from medtrans.data import ImageRecord, TrainStream\n"
              f"r = ImageRecord('t1', {str(templates['t1'].image)!r})\n"
              "s = TrainStream([r], [r], {'patch_size': (16, 16, 16), 'prefetch': 4, 'num_workers': 2})\n"
              "next(s)\n")  # no close(): the interpreter must stop the thread itself
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, encoding="utf-8")
    assert done.returncode == 0 and "terminate" not in done.stderr, done.stderr
