import itertools

import pytest
import torch

from medtrans.data import ImageRecord, PatchBatches, Preprocessing, QueueConfig, domain_queue, make_subject, paired_subject
from medtrans.utils import seed_everything
from tests.conftest import shared_file


@pytest.fixture(scope="module")
def templates():
    """SPM population templates (91×109×91, 2 mm, LAS): small real volumes that load fast."""
    return {
        name: ImageRecord(name, shared_file(f"spm-templates/{path}"))
        for name, path in {"t1": "canonical/avg152T1.nii", "t2": "canonical/avg152T2.nii", "pd": "canonical/avg152PD.nii"}.items()
    }


def _batches(templates, patch_size, sampler_type="uniform", seed=0, n=3, batch_size=2):
    seed_everything(seed)
    cfg = QueueConfig(patch_size=patch_size, samples_per_volume=4, max_length=8, sampler_type=sampler_type)
    qa = domain_queue([make_subject(templates["t1"], "a")], {"a": Preprocessing()}, cfg)
    qb = domain_queue([make_subject(templates[k], "b") for k in ("t2", "pd")], {"b": Preprocessing()}, cfg)
    return list(itertools.islice(iter(PatchBatches([qa, qb], batch_size)), n))


def test_unpaired_3d_patches_from_both_domains(templates):
    batches = _batches(templates, (32, 24, 16))
    for batch in batches:
        assert batch["a"].shape == batch["b"].shape == (2, 1, 32, 24, 16)
        assert batch["a"].min() >= -1 and batch["a"].max() <= 1


def test_2d_slices_cut_from_volumes(templates):
    batch = _batches(templates, (48, 40, 1), n=1, batch_size=4)[0]
    assert batch["a"].shape == batch["b"].shape == (4, 1, 48, 40)


def test_deterministic_under_a_seed(templates):
    first = _batches(templates, (16, 16, 16), seed=3)
    again = _batches(templates, (16, 16, 16), seed=3)
    other = _batches(templates, (16, 16, 16), seed=4)
    assert all(torch.equal(x[k], y[k]) for x, y in zip(first, again) for k in "ab")
    assert not all(torch.equal(x["a"], y["a"]) for x, y in zip(first, other))


def test_foreground_sampling_reduces_background_patches(templates):
    def background_fraction(sampler_type):
        batches = _batches(templates, (16, 16, 16), sampler_type, n=8)
        # avg152T1's faint, noisy background maps to about -0.94 (its brain lies above -0.6), not exactly to -1
        return torch.stack([(b["a"] <= -0.8).float().mean() for b in batches]).mean().item()

    uniform, foreground = background_fraction("uniform"), background_fraction("foreground")
    assert foreground < 0.5 * uniform, (uniform, foreground)


def test_paired_patches_come_from_the_same_place(templates):
    seed_everything(0)
    cfg = QueueConfig(patch_size=(16, 16, 16), samples_per_volume=2, max_length=4)
    same = paired_subject(templates["t1"], templates["t1"])
    queue = domain_queue([same], {"a": Preprocessing(), "b": Preprocessing()}, cfg)
    batch = next(iter(PatchBatches([queue], 2)))
    assert torch.equal(batch["a"], batch["b"])


def test_small_volumes_are_padded_and_bad_configs_rejected(templates):
    batch = _batches(templates, (96, 112, 8), n=1, batch_size=1)[0]  # larger than the 91×109 template
    assert batch["a"].shape == (1, 1, 96, 112, 8)
    with pytest.raises(ValueError, match="sampler_type"):
        QueueConfig(sampler_type="random")
    with pytest.raises(ValueError, match="more than one side of 1"):
        QueueConfig(patch_size=(64, 1, 1))


def test_subjects_with_and_without_masks_share_one_queue(tmp_path):
    import nibabel as nib
    import numpy as np

    t1 = shared_file("spm-templates/canonical/avg152T1.nii")
    image = nib.load(t1)
    mask = tmp_path / "mask.nii.gz"
    nib.save(nib.Nifti1Image((np.asarray(image.dataobj) > 0.2).astype(np.uint8), image.affine), mask)
    records = [ImageRecord("with", t1, mask), ImageRecord("without", t1)]
    seed_everything(0)
    cfg = QueueConfig(patch_size=(16, 16, 16), samples_per_volume=2, max_length=4, sampler_type="foreground")
    queue = domain_queue([make_subject(r, "a") for r in records], {"a": Preprocessing()}, cfg)
    batch = next(iter(PatchBatches([queue], 4, keys=("a",))))
    assert batch["a"].shape == (4, 1, 16, 16, 16)
