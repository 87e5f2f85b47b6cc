"""MR -> CT: the `window` intensity mapping keeps Hounsfield units exact, the synthetic MR/CT heads, and
docs/mr_to_ct.md's example run end to end (train with a CT window, translate back to HU, score the SynthRAD way)."""

import ast
import importlib.util
import math
import shlex
import shutil

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from medtrans.data.intensity import AffineIntensity, fit_intensity
from tests.conftest import REPO

WINDOW = {"type": "window", "low": -1024, "high": 3000}
TINY = {"generator": {"channels": [4, 8], "strides": [2]}, "discriminator": {"channels": 4, "num_layers": 2},
        "patch_size": [32, 32, 1], "batch_size": 2, "iterations": 2, "train#trainer#tracking": "none",
        "train#data#patch#num_workers": 0}
"""Merged over the documented bundle line: the smallest networks and patches, 2 iterations, no TensorBoard, so the
example takes seconds (as tests/bundles/test_bundles.py shrinks the bundles)."""
TINY_TRAIN = ["--set", 'generator={"channels": [4, 8], "strides": [2]}', 'discriminator={"channels": 4, "num_layers": 2}',
              "--patch-size", "32", "32", "1", "--batch-size", "2", "--iterations", "2", "--tracking", "none",
              "--workers", "0", "--no-progress", "--montage-interval", "0"]
"""Added to the documented ``medtrans train`` line, for the same reason."""


def test_the_window_mapping_returns_hu_to_float32_resolution():
    mapping = fit_intensity(WINDOW, np.zeros((2, 2, 2), np.float32))
    assert mapping == AffineIntensity.from_range(-1024.0, 3000.0) and mapping.clip
    hu = np.arange(-1024, 3001, dtype=np.float32)  # every integer HU of the window...
    rng = np.random.default_rng(0)
    hu = np.concatenate([hu, rng.uniform(-1024, 3000, 100_000).astype(np.float32)])  # ...and values between
    y = mapping.forward(hu)
    assert y.min() >= -1 and y.max() <= 1
    assert np.abs(mapping.inverse(y) - hu).max() <= 2.5e-4  # float32's spacing at 2048..4096 HU is 2.44e-4
    assert mapping.forward(np.float32(-1024.0)) == -1.0 and mapping.inverse(np.float32(-1.0)) == -1024.0
    assert mapping.inverse(np.float32(1.0)) == pytest.approx(3000.0, abs=2.5e-4)
    assert mapping.forward(np.float32(3500.0)) == 1.0  # beyond the window: clipped, as the evaluation clips


needs_nilearn = pytest.mark.skipif(importlib.util.find_spec("nilearn") is None,
                                   reason="the synthetic heads need the 'demo' extra (nilearn)")


@pytest.fixture(scope="module")
def heads(tmp_path_factory):
    from medtrans.datasets import make_synthetic_mr_ct

    return make_synthetic_mr_ct(tmp_path_factory.mktemp("heads"), num_train=1, num_test=1, voxel_mm=4.0)


@needs_nilearn
def test_synthetic_heads_are_paired_mr_and_ct_in_hu(heads):
    from medtrans.datasets import CT_HU
    from medtrans.defaults import BODY_DILATION_MM
    from medtrans.synthrad import body_mask
    from tests.test_evaluate import within_mm

    for folder in ("A", "B"):
        assert [p.name for p in (heads / folder).iterdir()] == ["s00.nii.gz"]
    for folder in ("test/A", "test/B", "test/mask"):
        assert [p.name for p in (heads / folder).iterdir()] == ["test00.nii.gz"]
    mr_image, ct_image = nib.load(heads / "test/A/test00.nii.gz"), nib.load(heads / "test/B/test00.nii.gz")
    assert mr_image.shape == ct_image.shape == (49, 58, 47) and np.array_equal(mr_image.affine, ct_image.affine)
    mr, ct = mr_image.get_fdata(), ct_image.get_fdata()
    head = nib.load(heads / "test/mask/test00.nii.gz").get_fdata() > 0
    assert np.all(mr[~head] == 0) and np.all(mr[head] > 0)  # MR: background 0, the skull dark but not background
    assert ct.min() == -1024 and abs(np.median(ct[~head]) - CT_HU["air"]) < 5  # air, clipped as scanners store it
    assert np.percentile(ct[head], 99) > 900 and -150 < np.median(ct[head]) < 60  # bone; soft tissue, fat
    # the body mask made from the CT is the head dilated by 5 mm (one 4 mm voxel across each face)
    mask = body_mask(ct, (4.0, 4.0, 4.0))
    assert (mask != within_mm(head, BODY_DILATION_MM, 4.0)).mean() < 1e-3


def _documented_blocks() -> list[list[str]]:
    """The command blocks of docs/mr_to_ct.md's walk-through, each as its non-empty lines."""
    text = (REPO / "docs" / "mr_to_ct.md").read_text(encoding="utf-8").split("## The whole path on synthetic data", 1)[1]
    return [[line for line in block.split("```", 1)[0].splitlines() if line.strip()] for block in text.split("```bash\n")[1:]]


def _run_line(line: str) -> None:
    """One line of the documented block, in this process: ``python -c CODE``, ``python -m monai.bundle run --key
    value...`` (values read as Python literals where they are, as the bundle's command line reads them; :data:`TINY`
    merged over them), or ``medtrans ...``."""
    words = shlex.split(line)
    if words[:2] == ["python", "-c"]:
        exec(words[2], {})  # noqa: S102 - the documentation's own line
    elif words[:4] == ["python", "-m", "monai.bundle", "run"]:
        from monai.bundle import run

        def value(text: str):
            try:
                return ast.literal_eval(text)
            except (ValueError, SyntaxError):
                return text

        options = {words[i][2:]: value(words[i + 1]) for i in range(4, len(words), 2)}
        run(**{**options, **TINY})
    elif words[0] == "medtrans":
        from medtrans.commands.cli import main

        assert main(words[1:] + (TINY_TRAIN if words[1] == "train" else [])) == 0, line
    else:
        raise AssertionError(f"unexpected line in docs/mr_to_ct.md: {line}")


@needs_nilearn
def test_the_documented_mr_to_ct_example_runs_end_to_end(tmp_path, monkeypatch, capsys):
    from medtrans.inference import Translator
    from medtrans.io import read_volume
    from medtrans.model import load_model

    for folder in ("base", "pix2pix"):
        shutil.copytree(REPO / "bundles" / folder, tmp_path / "bundles" / folder)
    monkeypatch.chdir(tmp_path)
    lines, bundle = _documented_blocks()
    assert [shlex.split(line)[:2] for line in lines] == [["python", "-c"], ["medtrans", "train"], ["medtrans", "translate"],
                                                         ["medtrans", "evaluate"]]
    assert "--intensity-b" in lines[1] and "--protocol synthrad" in lines[3]
    assert len(bundle) == 1 and "bundles/pix2pix/configs/mr_ct.yaml" in bundle[0]
    for line in [*lines, *bundle]:
        _run_line(line)
    printed = capsys.readouterr().out

    # the translators record the CT window and map back with it, trained from the command line or as a bundle
    window = {"type": "window", "low": -1024.0, "high": 3000.0, "background": -1024.0}
    assert load_model(tmp_path / "bundles" / "pix2pix").target_intensity == window
    model = load_model(tmp_path / "mr_ct_run" / "generator.pt")
    assert model.target_intensity == window
    source = read_volume(tmp_path / "mr_ct_data/test/A/test00.nii.gz")
    sct_image = nib.load(tmp_path / "sct/test00.nii.gz")
    sct = np.asarray(sct_image.dataobj, dtype=np.float32)
    assert sct.shape == source.data.shape and np.allclose(sct_image.affine, source.affine)
    head = source.data > 0  # the MR's foreground: everything but its background value 0
    assert np.all(sct[~head] == -1024.0)  # outside the head: the window's low end, in HU
    assert sct.min() >= -1024.0 and sct.max() <= 3000.0 + 2.5e-4
    translation = Translator(model).translate(source)
    expected = AffineIntensity.from_range(-1024.0, 3000.0).inverse(translation.output_normalized)
    assert np.array_equal(sct[head], expected[head])  # exactly the window's inverse of the network's output

    # the SynthRAD table, in HU
    scores = pd.read_csv(tmp_path / "scores.csv")
    assert list(scores.columns) == ["subject", "mae", "psnr", "ms_ssim"] and scores["subject"].tolist() == ["test00"]
    row = scores.iloc[0]
    assert all(math.isfinite(row[k]) for k in ("mae", "psnr", "ms_ssim"))
    assert 0 < row["mae"] < 4024 and 0 < row["ms_ssim"] <= 1
    assert "protocol (synthrad): MAE in HU; PSNR with data range 4024" in printed


@pytest.mark.parametrize("value,names", [
    ("window", ("--intensity-b", "not valid JSON")),
    ('["window"]', ("--intensity-b", "expected a JSON object")),
    ('{"type": "window", "low": NaN, "high": 3000}', ("--intensity-b", "expected a JSON object of finite values")),
    ('{"type": "hounsfield"}', ("--intensity-b", "intensity type must be one of")),
    ('{"type": "window", "low": 3000, "high": -1024}', ("--intensity-b", "window needs low < high")),
    ('{"type": "window", "low": -1024}', ("--intensity-b", "needs ['high']")),
])
def test_a_bad_intensity_option_is_refused_before_anything_is_read(value, names, tmp_path, capsys):
    from tests.conftest import refusal_line

    for domain in ("a", "b"):
        (tmp_path / domain).mkdir()
    run = tmp_path / "run"
    refusal_line(capsys, ["train", "--method", "pix2pix", "--data-a", tmp_path / "a", "--data-b", tmp_path / "b",
                          "--output", run, "--intensity-b", value], names)
    assert not run.exists()


def test_resuming_with_another_intensity_mapping_is_refused():
    from argparse import Namespace

    from medtrans.commands.train import resume_conflict

    stored = {"dims": 2, "intensity_b": '{"type": "window", "low": -1024, "high": 3000}'}
    same = Namespace(method="pix2pix", dims=2, intensity_b='{"high": 3000, "type": "window", "low": -1024.0}')
    assert resume_conflict(stored, same, {}) is None  # the same mapping, written another way
    other = Namespace(method="pix2pix", dims=2, intensity_b=None)
    assert "was trained with intensity_b=" in resume_conflict(stored, other, {})
