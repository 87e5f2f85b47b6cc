"""Motion correction: the corrupted/clean synthetic dataset, and docs/motion_correction.md's example run end to end."""

import shlex

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

pytest.importorskip("nilearn", reason="the synthetic brains need the 'demo' extra (nilearn)")

from medtrans.datasets import add_motion, make_synthetic_motion  # noqa: E402
from tests.conftest import REPO  # noqa: E402

TINY_TRAIN = ["--set", 'generator={"channels": 4, "num_res_blocks": 1}', 'discriminator={"channels": 4, "num_layers": 2}',
              "--patch-size", "32", "32", "1", "--batch-size", "2", "--iterations", "2", "--tracking", "none",
              "--workers", "0", "--no-progress", "--montage-interval", "0"]
"""Added to the documented ``medtrans train`` line: the smallest ResNet networks, 2 iterations."""


@pytest.fixture(scope="module")
def motion_data(tmp_path_factory):
    return make_synthetic_motion(tmp_path_factory.mktemp("motion"), num_a=2, num_b=2, voxel_mm=4.0)


def _load(path):
    image = nib.load(path)
    return image, np.asarray(image.dataobj, dtype=np.float32)


def test_corrupted_scans_keep_their_grid_and_differ_from_the_clean_one_inside_and_outside_the_brain(motion_data):
    assert sorted(p.name for p in (motion_data / "A").iterdir()) == ["a00.nii.gz", "a01.nii.gz"]
    assert sorted(p.name for p in (motion_data / "B").iterdir()) == ["b00.nii.gz", "b01.nii.gz"]
    (corrupted_image, corrupted), (clean_image, clean) = (_load(motion_data / "test" / f / "test00.nii.gz") for f in "AB")
    brain = _load(motion_data / "test/mask/test00.nii.gz")[1] > 0.5
    assert corrupted.shape == clean.shape and np.allclose(corrupted_image.affine, clean_image.affine)
    error = np.abs(corrupted - clean) / clean[brain].mean()
    assert 0.02 < error[brain].mean() < 0.5  # corrupted, still the same head
    assert error[~brain].mean() > 0.005  # ghosts reach into the background, which is 0 in the clean scan
    assert np.abs(corrupted[brain].mean() - clean[brain].mean()) < 0.1 * clean[brain].mean()
    a = [_load(p)[1] for p in sorted((motion_data / "A").iterdir())]
    b = [_load(p)[1] for p in sorted((motion_data / "B").iterdir())]
    assert not any(np.array_equal(x, y) for x in a for y in b)  # other subjects in each domain


def test_add_motion_is_a_function_of_its_seed(motion_data, tmp_path):
    source = motion_data / "test/B/test00.nii.gz"
    first, again, other = (add_motion(source, tmp_path / f"{n}.nii.gz", seed=s)
                           for n, s in (("first", 3), ("again", 3), ("other", 4)))
    assert np.array_equal(_load(first)[1], _load(again)[1]) and not np.array_equal(_load(first)[1], _load(other)[1])
    assert list(tmp_path.iterdir()) and not list(tmp_path.glob(".*"))  # written whole, nothing partial left


def test_the_documented_motion_correction_example_runs_end_to_end(tmp_path, monkeypatch):
    from medtrans.commands.cli import main

    monkeypatch.chdir(tmp_path)
    text = (REPO / "docs" / "motion_correction.md").read_text(encoding="utf-8").split("## The whole path", 1)[1]
    lines = [line for line in text.split("```bash\n", 1)[1].split("```", 1)[0].splitlines() if line.strip()]
    assert [shlex.split(line)[:2] for line in lines] == [["python", "-c"], ["medtrans", "train"], ["medtrans", "translate"],
                                                         ["medtrans", "evaluate"], ["medtrans", "evaluate"]]
    for line in lines:
        words = shlex.split(line)
        if words[0] == "python":
            exec(words[2], {})  # noqa: S102 - the documentation's own line
        else:
            assert main(words[1:] + (TINY_TRAIN if words[1] == "train" else [])) == 0, line
    corrected = nib.load(tmp_path / "corrected/test00.nii.gz")
    assert corrected.shape == nib.load(tmp_path / "motion_data/test/A/test00.nii.gz").shape
    for name in ("corrected.csv", "corrupted.csv"):
        scores = pd.read_csv(tmp_path / name)
        assert len(scores) == 1 and np.isfinite(scores["psnr"]).all()
