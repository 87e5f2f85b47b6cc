"""Bad training settings, a diverging or disk-starved run, a resumed run of other settings, and a model record that
would resample to a gigantic grid: each stops the command with one line naming the option or the file.

The contract of tests/test_bad_input.py: exit status 1, exactly one stderr line ``medtrans <command>: error: ...``
naming the file or the option, no traceback, nothing half-written, every input (and a run folder being resumed)
byte-for-byte unchanged. All volumes are small synthetic ones made here, so no real data is needed.
"""

from __future__ import annotations

import hashlib
import shutil
import stat
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from medtrans import defaults
from medtrans.commands.cli import build_parser, main
from medtrans.data.preprocessing import Preprocessing, prepare
from medtrans.errors import DivergenceError, InputError, MedtransError
from medtrans.io import read_volume
from medtrans.methods import build_method
from medtrans.methods.base import TranslationMethod
from medtrans.model import (
    TranslationModel,
    atomic_torch_save,
    load_model,
    save_generator,
)
from medtrans.networks import UNetGenerator
from medtrans.utils import seed_everything
from tests.conftest import refusal_line

TINY = ['generator={"channels": [4, 8], "strides": [2]}', 'discriminator={"channels": 4, "num_layers": 2, "num_scales": 1}']
SHAPE = (32, 32, 32)


def _phantom(shape=SHAPE, seed: int = 0, invert: bool = False) -> np.ndarray:
    """A head-like phantom: a skull shell, a brain with a brighter core and a midline, some noise; B inverts the
    brain's contrast (a T1 → T2-like pair)."""
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij"))
    r = np.sqrt((grid**2).sum(0))
    head, brain, core = r < 0.85, r < 0.7, r < 0.35
    data = np.where(head, 60.0, 0.0) + np.where(brain, 60.0, 0.0) + np.where(core, 80.0, 0.0)
    data += np.where(brain & (np.abs(grid[0]) < 0.08), 40.0, 0.0)
    if invert:
        data = np.where(brain, 320.0 - data, data)
    data += np.random.default_rng(seed).normal(0, 3, shape) * head
    return data.astype(np.float32)


def _save(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine), path)
    return path


def _tiny_model(path: Path, preprocessing: Preprocessing | None = None) -> Path:
    network_def = {"_target_": "medtrans.networks.UNetGenerator", "spatial_dims": 3, "in_channels": 1, "out_channels": 1,
                   "channels": [4, 8], "strides": [2]}
    network = UNetGenerator(spatial_dims=3, in_channels=1, out_channels=1, channels=[4, 8], strides=[2])
    return save_generator(path, TranslationModel(network, network_def, 3, preprocessing or Preprocessing()))


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_train")
    inputs, models = root / "inputs", root / "models"
    inputs.mkdir()
    models.mkdir()
    a, b = _save(inputs / "a.nii.gz", _phantom()), _save(inputs / "b.nii.gz", _phantom(seed=1, invert=True))
    _save(inputs / "small_b.nii.gz", _phantom((24, 24, 24), seed=2, invert=True))
    shifted = np.eye(4)
    shifted[:3, 3] = 5.0
    _save(inputs / "shifted_b.nii.gz", _phantom(seed=3, invert=True), shifted)
    _save(inputs / "small_mask.nii.gz", np.ones((24, 24, 24), np.uint8))
    (inputs / "junk.nii.gz").write_bytes(np.random.default_rng(0).bytes(3000))
    _tiny_model(models / "m3d.pt")
    _tiny_model(models / "tiny_spacing.pt", Preprocessing(spacing=(0.001, 0.001, 0.001)))
    return {"root": root, "inputs": inputs, "models": models, "a": a, "b": b}


def _snapshot(*folders: Path) -> dict[str, tuple[str, int]]:
    return {str(p): (hashlib.sha256(p.read_bytes()).hexdigest(), stat.S_IMODE(p.stat().st_mode))
            for folder in folders if folder.exists() for p in sorted(folder.rglob("*")) if p.is_file()}


def refused(capsys, env, argv: list, names: str | tuple[str, ...], out: Path | None = None,
            kept: Path | None = None) -> str:
    """Run ``medtrans ARGV``; assert the refusal contract; return the error line.

    ``out``: an output that must not exist afterwards (or be an empty folder); ``kept``: a folder (e.g. a run being
    resumed) that must be byte-for-byte unchanged.
    """
    watched = [env["inputs"], env["models"], *([kept] if kept is not None else [])]
    before = _snapshot(*watched)
    line = refusal_line(capsys, argv, names)
    if out is not None:
        assert not out.exists() or (out.is_dir() and list(out.iterdir()) == []), list(out.iterdir())
    assert _snapshot(*watched) == before, "an input changed"
    return line


def train_argv(env, out: Path, *extra, tiny: bool = True) -> list:
    """A tiny NEC run: 16³ patches of the 32³ phantoms, a 2-level U-Net, one checkpoint per iteration."""
    return ["train", "--method", "nec", "--data-a", env["a"], "--data-b", env["b"], "--output", out,
            "--iterations", "1", "--checkpoint-interval", "1", "--patch-size", "16", "16", "16", "--workers", "0",
            "--montage-interval", "0", "--tracking", "none", "--no-progress", *extra,
            *(["--set", *TINY] if tiny else [])]


def _files(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()} if folder.exists() else set()


# -- 1. devices and seeds -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("option", [["--device", "meta"], ["--device", "cuda:99"], ["--device", "cpu:1"],
                                    ["--device", "mps"], ["--seed", "-1"], ["--seed", str(2**64)],
                                    ["--seed", str(2**70)], ["--seed", "1.5"]])
def test_train_refuses_a_bad_device_or_seed(option, env, capsys, tmp_path):
    out = tmp_path / "run"
    refused(capsys, env, train_argv(env, out, *option), option[0], out)
    assert not out.exists()


@pytest.mark.parametrize("option", [["--device", "meta"], ["--device", "cuda:99"], ["--device", "gpu"]])
def test_translate_refuses_a_bad_device(option, env, capsys, tmp_path):
    refused(capsys, env, ["translate", env["a"], tmp_path / "o.nii.gz", "--model", env["models"] / "m3d.pt",
                          "--no-progress", *option], "--device", tmp_path)


@pytest.mark.parametrize("option", [["--seed", "-1"], ["--seed", str(2**64)], ["--device", "meta"],
                                    ["--device", "cuda:99"]])
def test_demo_refuses_a_bad_device_or_seed(option, env, capsys, tmp_path):
    out = tmp_path / "demo"
    refused(capsys, env, ["demo", "--output", out, "--iterations", "1", "--no-progress", *option], option[0], out)
    assert not out.exists()


def test_every_seed_the_parser_takes_seeds_everything():
    parser = build_parser()
    for seed in (0, 2**32, defaults.SEED_MAX):
        args = parser.parse_args(["demo", "--seed", str(seed)])
        assert args.seed == seed
        seed_everything(args.seed)
        np.random.default_rng((args.seed, 0, 1))  # the batches' generator
    for seed in (-1, defaults.SEED_MAX + 1, True, 1.0):
        with pytest.raises(ValueError, match="seed"):
            seed_everything(seed)
    seed_everything(0)


# -- 2. non-finite and negative option values -----------------------------------------------------------------------
@pytest.mark.parametrize("assignment,names", [
    ("lr=-1", ("--set", "lr must be > 0")),
    ("lr=0", ("--set", "lr must be > 0")),
    ("lr_discriminator=-0.001", ("--set", "lr_discriminator must be > 0")),
    ("weight_decay=-1", ("--set", "weight_decay must be >= 0")),
    ("lambda_ngf=-1", ("--set", "lambda_ngf must be >= 0")),
    ("lambda_gan=-0.5", ("--set", "lambda_gan must be >= 0")),
    ("lambda_negative=-1", ("--set", "lambda_negative must be >= 0")),
    ("lambda_ngf=NaN", ("--set", "lambda_ngf", "NaN or infinite")),
    ("lambda_ngf=Infinity", ("--set", "lambda_ngf", "NaN or infinite")),
    ("lr=-Infinity", ("--set", "lr", "NaN or infinite")),
    ("lambda_ngf=1e999", ("--set", "lambda_ngf", "NaN or infinite")),
    ("lambda_ngf=nan", ("--set", "lambda_ngf expects float")),
    ('discriminator={"channels": 4, "x": [1, NaN]}', ("--set", "discriminator", "NaN or infinite")),
    ('structure_losses=[{"type": "mi", "weight": -2}]', ("--set", "structure loss weight")),
])
def test_train_refuses_non_finite_or_negative_options(assignment, names, env, capsys, tmp_path):
    out = tmp_path / "run"
    refused(capsys, env, [*train_argv(env, out, tiny=False), "--set", *TINY, assignment], names, out)
    assert not out.exists()


@pytest.mark.parametrize("text,names", [
    ('[{"name": "RandomGhosting", "num_ghost": 4}]', ("--augment-a", "did you mean 'num_ghosts'")),
    ('["RandomAffine", {"name": "RandomGama"}]', ("--augment-a", "'RandomGama' is not a supported torchio transform")),
    ('[{"name": "RandomAffine", "degrees": NaN}]', ("--augment-a", "finite")),
])
def test_train_refuses_a_bad_augmentation(text, names, env, capsys, tmp_path):
    out = tmp_path / "run"
    refused(capsys, env, train_argv(env, out, "--augment-a", text), names, out)
    assert not out.exists()


@pytest.mark.parametrize("name,options", [
    ("nec", {"lr": -1e-4}), ("nec", {"lambda_ngf": float("nan")}), ("nec", {"lr_discriminator": 0.0}),
    ("cyclegan", {"lambda_identity": -0.5}), ("cut", {"lambda_nce": -1.0}), ("unit", {"lambda_kl": float("inf")}),
    ("unit", {"weight_decay": -1e-4}), ("pix2pix", {"lambda_l1": -100.0}), ("cycle_medgan", {"lambda_style": -1.0}),
])
def test_methods_refuse_negative_rates_and_weights(name, options):
    """Every method (built from Python or a bundle, not only from the command line) checks its own lambda_* and rates."""
    key = next(iter(options))
    with pytest.raises(ValueError, match=key):
        build_method(name, spatial_dims=2, **options)


# -- 3. divergence --------------------------------------------------------------------------------------------------
def test_divergence_is_one_line_and_keeps_the_last_good_checkpoint(env, capsys, tmp_path, monkeypatch):
    assert issubclass(DivergenceError, MedtransError) and issubclass(DivergenceError, RuntimeError)
    original = TranslationMethod.optimize

    def diverging(self, name, loss):  # the losses of the third step become NaN
        return original(self, name, loss * float("nan") if self.iteration >= 2 else loss)

    monkeypatch.setattr(TranslationMethod, "optimize", diverging)
    out = tmp_path / "run"
    argv = train_argv(env, out)
    argv[argv.index("--iterations") + 1] = "5"
    line = refused(capsys, env, argv, ("the loss for optimiser", "nan", "iteration 2", "last checkpoint"))
    assert _files(out) == {"checkpoint_00000001.pt", "checkpoint_00000002.pt"}, _files(out)
    assert load_model(out / "checkpoint_00000002.pt").spatial_dims == 3  # the last good one, whole
    state = torch.load(out / "checkpoint_00000002.pt", map_location="cpu", weights_only=True)
    assert state["engine"]["iteration"] == 2, line


# -- 4. validation pairs --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("pair,name", [
    (["a.nii.gz", "small_b.nii.gz"], "small_b.nii.gz"),
    (["a.nii.gz", "shifted_b.nii.gz"], "shifted_b.nii.gz"),
    (["a.nii.gz", "junk.nii.gz"], "junk.nii.gz"),
    (["junk.nii.gz", "b.nii.gz"], "junk.nii.gz"),
    (["a.nii.gz", "b.nii.gz", "small_mask.nii.gz"], "small_mask.nii.gz"),
])
def test_a_bad_validation_pair_is_refused_before_training(pair, name, env, capsys, tmp_path):
    out = tmp_path / "run"
    line = refused(capsys, env, train_argv(env, out, "--validate", *[env["inputs"] / p for p in pair]), name, out)
    assert not out.exists(), line


# -- 5. resuming with other settings --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(env, tmp_path_factory):
    """A finished 1-iteration run of the tiny NEC (one checkpoint)."""
    out = tmp_path_factory.mktemp("trained") / "run"
    assert main([str(a) for a in train_argv(env, out)]) == 0
    return out


def _copy_run(trained: Path, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    return run


@pytest.mark.parametrize("change,names", [
    (["--dims", "2", "--patch-size", "16", "16", "1"], "was trained with dims=3, this run asks dims=2"),
    (["--patch-size", "24", "24", "24"], "was trained with patch_size=[16, 16, 16], this run asks patch_size=[24, 24, 24]"),
    (["--batch-size", "2"], "batch_size=1, this run asks batch_size=2"),
    (["--seed", "1"], "seed=0, this run asks seed=1"),
    (["--set", 'generator={"channels": [8, 16], "strides": [2]}', TINY[1]], "--set generator="),
    (["--set", *TINY, "lambda_ngf=2"], "this run asks --set lambda_ngf=2"),
    (["--augment-a", '["RandomGamma"]'], "was trained with augment_a=null, this run asks augment_a="),
])
def test_resuming_with_other_settings_names_the_setting(change, names, env, trained, capsys, tmp_path):
    run = _copy_run(trained, tmp_path)
    argv = train_argv(env, run, tiny=False)
    argv[argv.index("--iterations") + 1] = "2"
    for option in ("--patch-size", "--set"):
        if option in change and option in argv:  # the change replaces the run's own value
            i = argv.index(option)
            del argv[i : i + (4 if option == "--patch-size" else 1 + len(TINY))]
    if "--set" not in change:
        argv += ["--set", *TINY]
    line = refused(capsys, env, [*argv, *change], ("checkpoint_00000001.pt", names, "--output"), kept=run)
    assert "Missing key" not in line and "size mismatch" not in line


def test_resuming_with_the_same_settings_continues(env, trained, capsys, tmp_path):
    """Only --iterations raised, and an option given with its default value: the run resumes."""
    run = _copy_run(trained, tmp_path)
    argv = [str(a) for a in train_argv(env, run, tiny=False)]
    argv[argv.index("--iterations") + 1] = "2"
    assert main([*argv, "--set", *TINY, "lambda_ngf=1", "--checkpoint-interval", "5"]) == 0, capsys.readouterr().err
    assert {"checkpoint_00000001.pt", "checkpoint_00000002.pt", "generator.pt"} <= _files(run)


def test_a_checkpoint_without_its_config_still_gives_one_line(env, trained, capsys, tmp_path):
    """Older checkpoints carry no config: networks of another shape are still reported in one line."""
    run = _copy_run(trained, tmp_path)
    path = run / "checkpoint_00000001.pt"
    state = torch.load(path, map_location="cpu", weights_only=True)
    state["config"] = {}
    torch.save(state, path)
    argv = train_argv(env, run, tiny=False)
    argv[argv.index("--iterations") + 1] = "2"
    refused(capsys, env, [*argv, "--set", 'generator={"channels": [8, 16], "strides": [2]}', TINY[1]],
            ("checkpoint_00000001.pt", "other settings", "--output"), kept=run)


# -- 6. a full disk while saving a checkpoint -----------------------------------------------------------------------
def _full_disk(*args, **kwargs):
    raise RuntimeError("[enforce fail at inline_container.cc:626] . unexpected pos 64 vs 0")


def test_a_full_disk_during_a_checkpoint_is_one_line(env, capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(torch, "save", _full_disk)
    out = tmp_path / "run"
    line = refused(capsys, env, train_argv(env, out), ("checkpoint_00000001.pt", "cannot be written", "unexpected pos"))
    assert "disk" in line
    assert not any(out.rglob("*.pt")) and not any("partial" in p.name for p in out.rglob("*")), _files(out)


def test_atomic_torch_save_reports_a_full_disk_and_only_that(tmp_path, monkeypatch):
    monkeypatch.setattr(torch, "save", _full_disk)
    with pytest.raises(InputError, match="x.pt: cannot be written"):
        atomic_torch_save({"a": 1}, tmp_path / "x.pt")
    assert list(tmp_path.iterdir()) == []

    def broken(*args, **kwargs):
        raise RuntimeError("some other bug")

    monkeypatch.setattr(torch, "save", broken)
    with pytest.raises(RuntimeError, match="some other bug"):  # not a file system problem: not disguised as one
        atomic_torch_save({"a": 1}, tmp_path / "x.pt")
    assert list(tmp_path.iterdir()) == []


# -- 7. a patch larger than the volumes -----------------------------------------------------------------------------
@pytest.mark.parametrize("patch,memory", [(["2048", "2048", "2048"], []), (["128", "128", "128"], ["--memory-gb", "0.01"])])
def test_padding_to_a_large_patch_counts_against_the_memory_budget(patch, memory, env, capsys, tmp_path):
    out = tmp_path / "run"
    argv = train_argv(env, out, *memory)
    i = argv.index("--patch-size")
    argv[i + 1 : i + 4] = patch
    line = refused(capsys, env, argv, ("--patch-size", "--memory-gb"), out)
    assert "padded" in line
    assert not out.exists()


# -- 8. a model record that would resample to a gigantic grid --------------------------------------------------------
def test_a_tiny_model_spacing_is_refused_before_resampling(env, capsys, tmp_path):
    model = env["models"] / "tiny_spacing.pt"
    line = refused(capsys, env, ["translate", env["a"], tmp_path / "o.nii.gz", "--model", model, "--no-progress"],
                   (str(model), "MAX_VOXELS"), tmp_path)
    assert "spacing" in line


def test_prepare_refuses_a_grid_over_the_voxel_cap(env):
    volume = read_volume(env["a"])
    with pytest.raises(InputError, match="MAX_VOXELS"):
        prepare(volume, Preprocessing(spacing=(0.01, 0.01, 0.01)))
    assert prepare(volume, Preprocessing(spacing=(2.0, 2.0, 2.0))).data.shape == (16, 16, 16)

