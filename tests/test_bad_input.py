"""Bad input never trains a model, never overwrites data, and never ends in a traceback.

Corrupted variants of a brain volume (a T1w of the embedded synthetic dataset) are made on the fly and given to every command; bad option values
and dangerous paths too. Every case must end with exit status 1, exactly one line on stderr naming the file or the
option, no traceback, nothing written, and every input byte-for-byte and mode-for-mode unchanged.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import medtrans.io
from medtrans.commands.cli import main
from medtrans.model import TranslationModel, save_generator
from medtrans.networks.registry import build_network
from tests.conftest import REPO, refusal_line, synthetic_nii, synthetic_pair

TINY_UNET = {"_target_": "medtrans.networks.UNetGenerator", "channels": [4, 8], "strides": [2], "in_channels": 1,
             "out_channels": 1}


def _variants(good_gz: Path, good_nii: Path, folder: Path) -> dict[str, Path]:
    """Every corruption of the good volume (file name → path)."""
    image = nib.load(good_nii)
    data = np.asarray(image.dataobj, dtype=np.float32)
    gz, raw = good_gz.read_bytes(), good_nii.read_bytes()
    rng = np.random.default_rng(0)
    out: dict[str, Path] = {}

    def write_bytes(name: str, content: bytes) -> None:
        out[name] = folder / name
        out[name].write_bytes(content)

    def write_image(name: str, array: np.ndarray) -> None:
        out[name] = folder / name
        nib.save(nib.Nifti1Image(array, image.affine), out[name])

    for fraction in (0.001, 0.02, 0.3, 0.7, 0.99):
        write_bytes(f"truncated_gz_{fraction}.nii.gz", gz[: int(len(gz) * fraction)])
    for size in (200, 352 + 1000, len(raw) // 2):  # inside the 348-byte header, just after it, half the data
        write_bytes(f"truncated_nii_{size}.nii", raw[:size])
    flipped = bytearray(gz)
    flipped[len(gz) // 2] ^= 0xFF
    write_bytes("flipped_byte.nii.gz", bytes(flipped))
    write_bytes("random_bytes.nii.gz", rng.bytes(50_000))
    write_bytes("random_gzip.nii.gz", gzip.compress(rng.bytes(50_000)))
    write_bytes("random_bytes.nii", rng.bytes(50_000))
    write_bytes("empty.nii.gz", b"")
    write_image("four_d.nii.gz", np.stack([data, data], axis=-1))
    write_image("two_d.nii.gz", data[:, :, 40])
    write_image("one_slice.nii.gz", data[:, :, 40:41])
    with_nan = data.copy()
    with_nan[40, 50, 40] = np.nan
    write_image("nan.nii.gz", with_nan)
    with_inf = data.copy()
    with_inf[40, 50, 40] = np.inf
    write_image("inf.nii.gz", with_inf)
    write_image("constant.nii.gz", np.full_like(data, 7.0))
    return out


@pytest.fixture(scope="module")
def env(tmp_path_factory, synthetic_brains):
    root = tmp_path_factory.mktemp("bad_input")
    inputs, variants, models = root / "inputs", root / "variants", root / "models"
    for folder in (inputs, variants, models):
        folder.mkdir()
    t1, t2 = synthetic_pair(synthetic_brains)
    synthetic_nii(t1, inputs / "good.nii")
    synthetic_nii(t1, inputs / "good.nii.gz")
    synthetic_nii(t2, inputs / "target.nii.gz")
    for dims in (2, 3):
        network_def = {**TINY_UNET, "spatial_dims": dims}
        save_generator(models / f"m{dims}d.pt", TranslationModel(build_network(network_def), network_def, dims))
    return {"root": root, "inputs": inputs, "models": models, "variant_dir": variants,
            "variants": _variants(inputs / "good.nii.gz", inputs / "good.nii", variants)}


def _snapshot(*folders: Path) -> dict[str, tuple[str, int]]:
    return {str(p): (hashlib.sha256(p.read_bytes()).hexdigest(), stat.S_IMODE(p.stat().st_mode))
            for folder in folders for p in sorted(folder.rglob("*")) if p.is_file()}


def refused(capsys, env, argv: list, names: str, out: Path | None = None) -> str:
    """Run ``medtrans ARGV``; assert the refusal contract; return the error line."""
    before = _snapshot(env["inputs"], env["variant_dir"], env["models"])
    line = refusal_line(capsys, argv, names)
    if out is not None:
        assert not out.exists() or list(out.iterdir()) == [], list(out.iterdir())
    assert _snapshot(env["inputs"], env["variant_dir"], env["models"]) == before, "an input changed"
    return line


# A byte flipped mid-stream in a .nii.gz of the synthetic T1 still inflates, to 4 wrong voxels: only the gzip trailer's
# CRC-32 tells, so the reader inflates the stream to its end.
VARIANTS = ["truncated_gz_0.001", "truncated_gz_0.02", "truncated_gz_0.3", "truncated_gz_0.7", "truncated_gz_0.99",
            "truncated_nii_200", "truncated_nii_1352", "truncated_nii_half", "flipped_byte", "random_bytes.gz",
            "random_gzip", "random_bytes.nii", "empty", "four_d", "two_d", "one_slice", "nan", "inf", "constant"]


def _variant(env, key: str) -> Path:
    names = {"truncated_nii_half": next(n for n in env["variants"] if n.startswith("truncated_nii_")
                                        and n not in ("truncated_nii_200.nii", "truncated_nii_1352.nii")),
             "random_bytes.gz": "random_bytes.nii.gz", "random_bytes.nii": "random_bytes.nii"}
    name = names.get(key) or next(n for n in env["variants"] if n.split(".nii")[0] == key)
    return env["variants"][name]


@pytest.mark.parametrize("key", VARIANTS)
def test_translate_refuses_a_bad_volume(key, env, capsys, tmp_path):
    bad = _variant(env, key)
    refused(capsys, env, ["translate", bad, tmp_path / "out.nii.gz", "--model", env["models"] / "m3d.pt"], str(bad), tmp_path)


@pytest.mark.parametrize("side", ["prediction", "target"])
@pytest.mark.parametrize("key", VARIANTS)
def test_evaluate_refuses_a_bad_volume(key, side, env, capsys, tmp_path):
    bad, good = _variant(env, key), env["inputs"] / "target.nii.gz"
    pair = [bad, good] if side == "prediction" else [good, bad]
    refused(capsys, env, ["evaluate", *pair, "--csv", tmp_path / "s.csv"], str(bad), tmp_path)


@pytest.mark.parametrize("key", VARIANTS)
def test_train_refuses_a_domain_with_a_bad_volume(key, env, capsys, tmp_path):
    bad = _variant(env, key)
    domain = tmp_path / "a"
    domain.mkdir()
    shutil.copy(env["inputs"] / "good.nii.gz", domain / "good.nii.gz")
    os.symlink(bad, domain / bad.name)  # the variant itself, so the snapshot sees any change to it
    out = tmp_path / "run"
    refused(capsys, env, ["train", "--method", "nec", "--data-a", domain, "--data-b", env["inputs"] / "target.nii.gz",
                          "--output", out, "--iterations", "2", "--patch-size", "48", "48", "48", "--tracking", "none",
                          "--no-progress"], bad.name, out)
    assert not out.exists()


def test_input_is_never_overwritten(env, capsys, tmp_path):
    model = env["models"] / "m3d.pt"
    readonly = tmp_path / "ro.nii.gz"
    shutil.copy(env["inputs"] / "good.nii.gz", readonly)
    os.chmod(readonly, 0o444)
    folder = tmp_path / "folder"
    folder.mkdir()
    shutil.copy(env["inputs"] / "good.nii.gz", folder / "x.nii.gz")
    before = _snapshot(tmp_path)
    for argv, names in [
        (["translate", readonly, readonly, "--model", model], "ro.nii.gz"),
        (["translate", readonly, tmp_path / "." / "ro.nii.gz", "--model", model], "ro.nii.gz"),
        (["translate", folder, folder, "--model", model], "folder"),
        (["translate", folder, folder / "sub", "--model", model], "folder/sub"),
        (["translate", env["inputs"] / "good.nii.gz", tmp_path / "o.nii.gz", "--model", model, "--faithfulness-map",
          env["inputs"] / "good.nii.gz"], "good.nii.gz"),
        (["evaluate", readonly, readonly, "--csv", readonly], "ro.nii.gz"),
        (["train", "--method", "nec", "--data-a", folder, "--data-b", folder, "--output", folder / "run"], "--output"),
        (["demo", "--data", folder, "--output", folder / "demo"], "--output"),
    ]:
        refused(capsys, env, argv, str(names))
    assert _snapshot(tmp_path) == before and stat.S_IMODE(readonly.stat().st_mode) == 0o444
    assert sorted(p.name for p in folder.iterdir()) == ["x.nii.gz"]


def test_unwritable_outputs_are_refused_before_any_work(env, capsys, tmp_path):
    good, model = env["inputs"] / "good.nii.gz", env["models"] / "m3d.pt"
    a_file = tmp_path / "file"
    a_file.write_text("x")
    cases = [
        (tmp_path / "missing" / "o.nii.gz", "output folder"),
        (a_file / "o.nii.gz", "is a file, not a folder"),
        (tmp_path, "output path is a folder"),
        (tmp_path / "o.txt", "must be a .nii or .nii.gz"),
        (Path("/proc/o.nii.gz"), "/proc/o.nii.gz: cannot be written"),
    ]
    for out, message in cases:
        line = refused(capsys, env, ["translate", good, out, "--model", model], message)
        assert str(out) in line
    refused(capsys, env, ["evaluate", good, env["inputs"] / "target.nii.gz", "--csv", tmp_path / "no" / "s.csv"],
            "s.csv")
    refused(capsys, env, ["train", "--method", "nec", "--data-a", good, "--data-b", good, "--output", a_file], "--output")


def test_a_full_disk_is_one_line_and_leaves_nothing(env, capsys, tmp_path, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(medtrans.io.outputs.nib, "save", full)
    line = refused(capsys, env, ["translate", env["inputs"] / "good.nii.gz", tmp_path / "o.nii.gz", "--model",
                                 env["models"] / "m3d.pt", "--no-progress"], "o.nii.gz", tmp_path)
    assert "No space left on device" in line


@pytest.mark.parametrize("options,names", [
    (["--overlap", "1.5"], "--overlap"),
    (["--overlap", "-0.1"], "--overlap"),
    (["--roi-size", "0", "-5", "64"], "--roi-size"),
    (["--roi-size", "40", "40"], "--roi-size"),
    (["--batch-size", "0"], "--batch-size"),
    (["--sw-batch-size", "0"], "--sw-batch-size"),
    (["--faithfulness-eps", "0"], "--faithfulness-eps"),
    (["--precision", "tf32"], "--precision"),
    (["--device", "cuda:7"], "--device"),
    (["--device", "gpu"], "--device"),
    (["--target-intensity", "histogram"], "--reference"),
    (["--target-intensity", "window"], "--window"),
    (["--mask", "/nonexistent/mask.nii.gz"], "mask.nii.gz"),
    (["--slice-axis", "1"], "--slice-axis"),  # a 3D model
])
def test_bad_translate_options(options, names, env, capsys, tmp_path):
    refused(capsys, env, ["translate", env["inputs"] / "good.nii.gz", tmp_path / "o.nii.gz", "--model",
                          env["models"] / "m3d.pt", *options], names, tmp_path)


@pytest.mark.parametrize("option", [["--roi-size", "32", "32", "32"], ["--overlap", "0.5"], ["--sw-batch-size", "2"],
                                    ["--blend-mode", "constant"]])
def test_3d_options_with_a_2d_model_are_refused(option, env, capsys, tmp_path):
    line = refused(capsys, env, ["translate", env["inputs"] / "good.nii.gz", tmp_path / "o.nii.gz", "--model",
                                 env["models"] / "m2d.pt", *option], option[0], tmp_path)
    assert "applies to 3D models only" in line


@pytest.mark.parametrize("options,names", [
    (["--set", "lamda_ngf=10"], "did you mean 'lambda_ngf'"),
    (["--set", 'generator={"channels": [8]'], "--set: generator"),
    (["--set", "lambda_ngf=1O"], "lambda_ngf expects float"),
    (["--set", 'generator={"channels": 16}'], "--set: cannot build nec's networks"),
    (["--set", "oops"], "expected KEY=VALUE"),
    (["--set", 'variant="fastcut"'], "nec has no option 'variant'"),
    (["--set", 'structure_losses=[{"type": "polarity", "cooldown": [200, 0]}]'], "--set: nec: structure loss cooldown"),
    (["--set", 'structure_losses=[{"type": "polarity", "polarity_type": "negative"}]'], "--set: nec: polarity_type"),
    (["--patch-size", "16", "16", "16"], "--patch-size"),
    (["--patch-size", "50", "50", "50"], "--patch-size"),  # not a multiple of the U-Net's 8
    (["--iterations", "0"], "--iterations"),
    (["--memory-gb", "0"], "--memory-gb"),
    (["--workers", "-1"], "--workers"),
    (["--method", "munit"], "--method"),
    (["--dims", "4"], "--dims"),
    (["--device", "cuda"], "--device"),
    (["--validate", "a.nii.gz"], "--validate"),
    (["--validate", "/nonexistent/a.nii.gz", "/nonexistent/b.nii.gz"], "a.nii.gz"),
    (["--memory-gb", "0.000001", "--storage", "memory"], "memory_gb"),
    (["--storage", "ram"], "--storage"),
])
def test_bad_train_options(options, names, env, capsys, tmp_path):
    argv = ["train", "--method", "nec", "--data-a", env["inputs"] / "good.nii.gz", "--data-b",
            env["inputs"] / "target.nii.gz", "--output", tmp_path / "run", "--iterations", "1", "--tracking", "none",
            "--no-progress"]
    argv = [a for a in argv if not (options[0] == "--method" and a in ("--method", "nec"))]
    refused(capsys, env, [*argv, *options], names)
    assert not (tmp_path / "run").exists()


def test_a_run_folder_of_another_method_is_refused(env, capsys, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint_00000005.pt").write_bytes(b"not a checkpoint")
    refused(capsys, env, ["train", "--method", "nec", "--data-a", env["inputs"] / "good.nii.gz", "--data-b",
                          env["inputs"] / "target.nii.gz", "--output", run], "checkpoint_00000005.pt")
    assert [p.name for p in run.iterdir()] == ["checkpoint_00000005.pt"]


@pytest.mark.parametrize("options,names", [
    (["--normalization", "none"], "--normalization"),
    (["--percentiles", "1"], "--percentiles"),
    (["--sigma-mm", "-1"], "--sigma-mm"),
])
def test_bad_evaluate_options(options, names, env, capsys, tmp_path):
    refused(capsys, env, ["evaluate", env["inputs"] / "good.nii.gz", env["inputs"] / "target.nii.gz", *options], names)


def test_evaluate_names_what_does_not_match(env, capsys, tmp_path):
    good = env["inputs"] / "good.nii.gz"
    shifted = tmp_path / "shifted.nii.gz"
    image = nib.load(good)
    affine = image.affine.copy()
    affine[0, 3] += 2
    nib.save(nib.Nifti1Image(np.asarray(image.dataobj), affine), shifted)
    line = refused(capsys, env, ["evaluate", good, shifted], "shifted.nii.gz")
    assert "affine" in line and "differs from the prediction" in line
    refused(capsys, env, ["evaluate", good, tmp_path / "missing.nii.gz"], "missing.nii.gz: does not exist")
    empty = tmp_path / "empty_mask.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros(image.shape, np.uint8), image.affine), empty)
    refused(capsys, env, ["evaluate", good, good, "--mask", empty], "empty_mask.nii.gz: mask is empty")


def test_bad_models_are_one_line(env, capsys, tmp_path):
    good = env["inputs"] / "good.nii.gz"
    junk = tmp_path / "models" / "junk.pt"
    junk.parent.mkdir()
    junk.write_bytes(np.random.default_rng(0).bytes(4000))
    out = tmp_path / "out"
    out.mkdir()
    line = refused(capsys, env, ["translate", good, out / "o.nii.gz", "--model", junk], "junk.pt", out)
    assert "weights_only" not in line
    refused(capsys, env, ["translate", good, out / "o.nii.gz", "--model", junk.parent], "not a bundle", out)


def test_the_console_script_exits_1_without_traceback(env, tmp_path):
    """The same contract through a real process, and --debug for the traceback."""
    bad = _variant(env, "truncated_gz_0.3")
    command = [sys.executable, "-m", "medtrans", "translate", str(bad), str(tmp_path / "o.nii.gz"), "--model",
               str(env["models"] / "m3d.pt")]
    done = subprocess.run(command, capture_output=True, encoding="utf-8", cwd=REPO)
    assert done.returncode == 1 and done.stderr.count("\n") == 1 and str(bad) in done.stderr, done.stderr
    debug = subprocess.run(command + ["--debug"], capture_output=True, encoding="utf-8", cwd=REPO)
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "InputError" in debug.stderr


def test_output_headers_keep_the_input_codes(env, tmp_path):
    image = nib.load(env["inputs"] / "good.nii.gz")
    coded = tmp_path / "coded.nii.gz"
    out = nib.Nifti1Image(np.asarray(image.dataobj), image.affine)
    out.set_qform(image.affine, code=0)
    out.set_sform(image.affine, code=2)  # aligned to another scan, no scanner qform: what clinical pipelines read
    nib.save(out, coded)
    assert main(["translate", str(coded), str(tmp_path / "o.nii.gz"), "--model", str(env["models"] / "m3d.pt"),
                 "--no-progress"]) == 0
    result = nib.load(tmp_path / "o.nii.gz")
    assert (int(result.header["qform_code"]), int(result.header["sform_code"])) == (0, 2)
    assert np.allclose(result.affine, nib.load(coded).affine)
