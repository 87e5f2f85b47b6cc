"""Outputs never replace an input, and never survive half-written.

Every command's outputs are checked against every file it reads (members of input folders too, through symlinks and
``..``) and against each other before any work starts; SIGTERM cleans up as SIGINT does; temporaries that killed runs
left are removed by the next run that writes there; files that belong together (a translation and its faithfulness
maps, evaluate's table and summary) appear together or not at all; failed runs leave no folder they created. All
volumes are synthetic, made here, so these tests run on a fresh clone.
"""

from __future__ import annotations

import errno
import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

import medtrans.io
from medtrans.commands.cli import main
from medtrans.errors import InputError
from medtrans.io import atomic_write_many, check_outputs, remove_stale_partials
from medtrans.model import TranslationModel, save_generator
from tests.conftest import REPO, refusal_line

try:
    from medtrans.model import build_network
except ImportError:  # moved to the registry
    from medtrans.networks.registry import build_network

TINY_UNET = {"_target_": "medtrans.networks.UNetGenerator", "spatial_dims": 3, "channels": [4, 8], "strides": [2],
             "in_channels": 1, "out_channels": 1}
TINY_NEC_2D = ["--method", "nec", "--dims", "2", "--patch-size", "32", "32", "1", "--batch-size", "2", "--workers", "0",
               "--no-progress", "--set", 'generator={"channels": [4, 8], "strides": [2]}',
               'discriminator={"channels": 4, "num_layers": 2, "num_scales": 1}']
PARTIAL = (".partial", ".probe")
OLD = time.time() - 3600  # an mtime before this process started


def _volume(path: Path, seed: int, shape: tuple[int, ...] = (24, 24, 16)) -> Path:
    data = gaussian_filter(np.random.default_rng(seed).random(shape), 2).astype(np.float32) * 1000
    nib.save(nib.Nifti1Image(data, np.diag([1.0, 1.0, 1.0, 1.0])), path)
    return path


@pytest.fixture
def env(tmp_path):
    """``in/`` (t1, t2, a mask, a 3D model, train domains ``a/`` ``b/``) and an empty ``out/``."""
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    out.mkdir()
    _volume(inputs / "t1.nii.gz", 0)
    _volume(inputs / "t2.nii.gz", 1)
    nib.save(nib.Nifti1Image(np.ones((24, 24, 16), np.uint8), np.eye(4)), inputs / "mask.nii.gz")
    save_generator(inputs / "m3d.pt", TranslationModel(build_network(TINY_UNET), TINY_UNET, 3))
    for domain, seed in (("a", 2), ("b", 3)):
        (inputs / domain).mkdir()
        _volume(inputs / domain / "s1.nii.gz", seed, (32, 32, 8))
    return {"root": tmp_path, "in": inputs, "out": out, "t1": inputs / "t1.nii.gz", "t2": inputs / "t2.nii.gz",
            "mask": inputs / "mask.nii.gz", "model": inputs / "m3d.pt"}


def _snapshot(*folders: Path) -> dict[str, str]:
    """Every file (symlinks as their target's content) of the folders, with its SHA-256."""
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest()
            for folder in folders for p in sorted(folder.rglob("*")) if p.is_file()}


def _temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.rglob(".*") if any(tag in p.name for tag in PARTIAL)]


def refused(capsys, argv: list, *names: str) -> str:
    """Run ``medtrans ARGV``: exit 1, one line naming every one of ``names``, no traceback; return the line."""
    return refusal_line(capsys, argv, names)


def translate(env, *argv) -> list:
    return ["translate", *argv, "--model", env["model"], "--no-progress"]


# -- A. outputs never overwrite an input, nor each other -------------------------------------------------------------
def test_translate_never_overwrites_its_mask_reference_or_model_folder(env, capsys):
    t1, mask, t2, out = env["t1"], env["mask"], env["t2"], env["out"]
    (out / "sub").mkdir()
    os.symlink(mask, out / "link.nii.gz")
    invented_mask = out / "m_invented.nii.gz"
    os.symlink(mask, invented_mask)
    before = _snapshot(env["in"])
    cases = [
        ([t1, mask, "--mask", mask], str(mask), "OUTPUT", "--mask"),
        ([t1, out / "sub" / ".." / ".." / "in" / "mask.nii.gz", "--mask", mask], "OUTPUT", "--mask"),
        ([t1, out / "link.nii.gz", "--mask", mask], "link.nii.gz", "OUTPUT", "--mask"),  # through a symlink
        ([t1, out / "o.nii.gz", "--mask", mask, "--faithfulness-map", mask], "--faithfulness-map", "--mask"),
        ([t1, out / "o.nii.gz", "--mask", mask, "--faithfulness-map", out / "m.nii.gz"],  # its _invented map
         str(invented_mask), "--faithfulness-map", "--mask"),
        ([t1, t2, "--target-intensity", "histogram", "--reference", t2], str(t2), "OUTPUT", "--reference"),
        ([t1, out / "o.nii.gz", "--faithfulness-map", out / "o.nii.gz"], "--faithfulness-map and OUTPUT",
         "name the same file"),
        ([t1, out / "f_erased.nii.gz", "--faithfulness-map", out / "f.nii.gz"], "f_erased.nii.gz",
         "--faithfulness-map and OUTPUT"),
    ]
    for argv, *names in cases:
        refused(capsys, translate(env, *argv), *names)
    assert _snapshot(env["in"]) == before
    assert sorted(p.name for p in out.iterdir()) == ["link.nii.gz", "m_invented.nii.gz", "sub"]
    assert _temporaries(env["root"]) == []


def test_translate_folder_mode_checks_every_member(env, capsys):
    """A folder input's members are inputs too, also when they are symlinks to files elsewhere."""
    folder, elsewhere, out = env["root"] / "volumes", env["root"] / "elsewhere", env["out"]
    folder.mkdir()
    elsewhere.mkdir()
    _volume(folder / "a.nii.gz", 5)
    _volume(elsewhere / "b.nii.gz", 6)
    os.symlink(elsewhere / "b.nii.gz", folder / "b.nii.gz")
    os.symlink(folder, env["root"] / "volumes_link")
    before = _snapshot(folder, elsewhere, env["in"])
    refused(capsys, translate(env, folder, out / "t", "--faithfulness-map", elsewhere), str(elsewhere / "b.nii.gz"),
            "--faithfulness-map would overwrite the INPUT")
    refused(capsys, translate(env, folder, env["root"] / "volumes_link" / "sub"), "OUTPUT would write inside the INPUT")
    refused(capsys, translate(env, folder, out / "t", "--faithfulness-map", out / "t"), "name the same file")
    masks = env["root"] / "masks"
    masks.mkdir()
    nib.save(nib.Nifti1Image(np.ones((24, 24, 16), np.uint8), np.eye(4)), masks / "a.nii.gz")
    before[str(masks / "a.nii.gz")] = hashlib.sha256((masks / "a.nii.gz").read_bytes()).hexdigest()
    refused(capsys, translate(env, folder, masks, "--mask", masks / "a.nii.gz"), "a.nii.gz: OUTPUT would overwrite the "
            "--mask")
    assert _snapshot(folder, elsewhere, env["in"], masks) == before
    assert list(out.iterdir()) == [] and _temporaries(env["root"]) == []


def test_evaluate_csv_never_lands_among_its_inputs(env, capsys):
    preds, targets, out = env["root"] / "preds", env["root"] / "targets", env["out"]
    preds.mkdir()
    targets.mkdir()
    _volume(preds / "s1.nii.gz", 7)
    _volume(targets / "s1.nii.gz", 8)
    os.symlink(preds / "s1.nii.gz", out / "x_summary.csv")  # the summary's name points at a prediction
    before = _snapshot(preds, targets)
    for csv, names in [
        (preds / "scores.csv", ("--csv would write inside the PREDICTION folder",)),
        (targets / "scores.csv", ("--csv would write inside the TARGET folder",)),
        (out / ".." / "preds" / "scores.csv", ("PREDICTION",)),
        (out / "x.csv", ("x_summary.csv", "--csv would overwrite the PREDICTION")),  # the summary, through the symlink
    ]:
        refused(capsys, ["evaluate", preds, targets, "--csv", csv], *names)
    refused(capsys, ["evaluate", preds / "s1.nii.gz", targets / "s1.nii.gz", "--csv", out / "x.csv"], "x_summary.csv")
    assert _snapshot(preds, targets) == before
    assert sorted(p.name for p in out.iterdir()) == ["x_summary.csv"] and _temporaries(env["root"]) == []


def test_train_and_demo_outputs_are_checked_against_their_inputs(env, capsys):
    a, b, masks = env["in"] / "a", env["in"] / "b", env["root"] / "masks"
    masks.mkdir()
    nib.save(nib.Nifti1Image(np.ones((32, 32, 8), np.uint8), np.eye(4)), masks / "s1.nii.gz")
    before = _snapshot(env["in"], masks)
    train = ["train", "--data-a", a, "--data-b", b, "--iterations", "1", "--tracking", "none", *TINY_NEC_2D]
    refused(capsys, [*train, "--masks-a", masks, "--output", masks / "run"], "--output would write inside the --masks-a")
    refused(capsys, [*train, "--output", env["root"] / "out" / ".." / "in" / "b" / "run"], "--data-b")
    refused(capsys, ["train", "--data-a", a / "*.nii.gz", *train[3:], "--output", a / "run"], "--output", "--data-a")
    csv = env["root"] / "a.csv"
    csv.write_text(f"subject_id,image\ns1,{a / 's1.nii.gz'}\n")
    os.symlink(a / "s1.nii.gz", env["out"] / "generator.pt")  # what the run would write is a listed image
    refused(capsys, ["train", "--data-a", csv, "--data-b", b, "--output", env["out"], "--iterations", "1",
                     *TINY_NEC_2D], "generator.pt", "--output would overwrite the --data-a")
    refused(capsys, ["demo", "--data", env["in"], "--output", env["in"] / "a"], "--output", "--data")
    demo_data = env["root"] / "demo" / "translated"  # where the demo would write its translations
    (demo_data / "A").mkdir(parents=True)
    refused(capsys, ["demo", "--data", demo_data, "--output", env["root"] / "demo"], "--output", "--data")
    assert _snapshot(env["in"], masks) == before
    assert not (masks / "run").exists() and not (a / "run").exists()
    assert [p.name for p in (env["root"] / "demo").iterdir()] == ["translated"]
    assert sorted(p.name for p in env["out"].iterdir()) == ["generator.pt"]


def test_check_outputs_names_the_output_and_its_option(tmp_path):
    run, data = tmp_path / "run", tmp_path / "data"
    run.mkdir()
    data.mkdir()
    (run / "checkpoint_00000003.pt").write_bytes(b"x")
    (run / "logs").mkdir()
    (run / "logs" / "mine.nii.gz").write_bytes(b"x")
    with pytest.raises(InputError, match=r"checkpoint_\*\.pt: --output would overwrite the --data-a"):
        check_outputs([(run / "checkpoint_*.pt", "--output")], [(run / "checkpoint_00000003.pt", "--data-a")])
    with pytest.raises(InputError, match="logs: --output folder holds the --data-a"):
        check_outputs([], [(run / "logs" / "mine.nii.gz", "--data-a")], folders=[(run / "logs", "--output")])
    check_outputs([(run / "x.nii.gz", "OUTPUT"), (None, "--faithfulness-map")], [(data, "INPUT"), (None, "--mask")])
    os.symlink(tmp_path / "loop", tmp_path / "loop")
    check_outputs([(tmp_path / "loop" / "x.nii.gz", "OUTPUT")], [(tmp_path / "loop", "INPUT"), (data, "--mask")])


# -- B. partial outputs never survive ---------------------------------------------------------------------------------
SLOW_WRITER = """
import pathlib, signal, sys, time
import {module}
signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started with SIGINT ignored (a background job)
real = {module}.{function}

def slow(obj, path, *args, **kwargs):
    real(obj, path, *args, **kwargs)
    if "{match}" in str(path):
        pathlib.Path(sys.argv[1]).write_text(str(path))  # the temporary is on disk, and now the write is slow
        time.sleep(120)

{module}.{function} = slow
from medtrans.commands.cli import main
sys.exit(main(sys.argv[2:]))
"""


def _kill_while_writing(tmp_path: Path, argv: list, signum: int, module: str, function: str, match: str = ""
                        ) -> tuple[int, str, Path]:
    """Run ``medtrans ARGV`` in a real process whose ``module.function`` write sleeps once the temporary exists; send
    ``signum`` then. Returns the exit status, stderr and the temporary it was writing."""
    marker = tmp_path / "writing"
    script = textwrap.dedent(SLOW_WRITER.format(module=module, function=function, match=match))
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-c", script, str(marker), *map(str, argv)], cwd=REPO, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, encoding="utf-8")
    deadline = time.monotonic() + 300
    while not marker.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    if process.poll() is not None or not marker.exists():
        process.kill()
        pytest.fail(f"the write never started: {process.communicate()}")
    time.sleep(0.2)
    temporary = Path(marker.read_text())
    assert temporary.exists()  # what a kill without clean-up would leave
    process.send_signal(signum)
    try:
        _, err = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail(f"signal {signum} did not stop the process: {process.communicate()}")
    return process.returncode, err, temporary


@pytest.mark.parametrize("signum,code,word", [(signal.SIGTERM, 143, "terminated"), (signal.SIGINT, 130, "interrupted")])
def test_a_signal_during_translate_write_leaves_nothing(env, signum, code, word):
    before = _snapshot(env["in"])
    out = env["out"] / "o.nii.gz"
    returncode, err, temporary = _kill_while_writing(
        env["root"], translate(env, env["t1"], out, "--faithfulness-map", env["out"] / "f.nii.gz"), signum,
        "nibabel", "save", ".o.nii.gz.")
    assert returncode == code, err
    assert err.strip().splitlines() == [f"medtrans translate: {word}"], err
    assert temporary.name.startswith(".o.nii.gz.") and not temporary.exists()
    assert list(env["out"].iterdir()) == []  # neither the translation nor any of the three maps written before it
    assert _snapshot(env["in"]) == before


def test_sigterm_during_a_checkpoint_write_leaves_the_last_good_one(env):
    run = env["out"] / "run"
    before = _snapshot(env["in"])
    argv = ["train", "--data-a", env["in"] / "a", "--data-b", env["in"] / "b", "--output", run, "--iterations", "3",
            "--checkpoint-interval", "1", "--tracking", "none", *TINY_NEC_2D]
    returncode, err, temporary = _kill_while_writing(env["root"], argv, signal.SIGTERM, "torch", "save",
                                                     "checkpoint_00000002")
    assert returncode == 143, err
    assert err.strip().splitlines()[-1] == "medtrans train: terminated" and "Traceback" not in err, err
    assert temporary.name.startswith(".checkpoint_00000002.pt.") and temporary.name.endswith(".partial.pt")
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint_00000001.pt"]  # resumable; no temporary
    assert _snapshot(env["in"]) == before


def test_stale_temporaries_are_removed_by_the_next_write_and_only_they(env):
    out = env["out"]
    stale = [out / ".o.nii.gz.k2j_4x9a.partial.nii.gz", out / ".o.nii.gz.0abc1234.probe",
             out / ".f_erased.nii.gz.zzzzzzzz.partial.nii.gz"]
    kept = [out / ".o.nii.gz.notes", out / "o.partial.nii.gz", out / ".o.nii.gz.abcdefgh.partial.txt",
            out / ".other.nii.gz.abcdefgh.partial.nii.gz", out / ".o.nii.gz.TOOLONG12.partial.nii.gz"]
    for path in stale + kept:
        path.write_bytes(b"left behind")
        os.utime(path, (OLD, OLD))
    fresh = out / ".o.nii.gz.abcdefgh.partial.nii.gz"  # a run writing now, started after this process
    fresh.write_bytes(b"being written")
    assert main([str(a) for a in translate(env, env["t1"], out / "o.nii.gz", "--faithfulness-map",
                                           out / "f.nii.gz")]) == 0
    assert not any(p.exists() for p in stale)
    assert all(p.read_bytes() == b"left behind" for p in kept) and fresh.exists()
    assert {"o.nii.gz", "f.nii.gz", "f_invented.nii.gz", "f_erased.nii.gz"} <= {p.name for p in out.iterdir()}


def test_stale_checkpoint_temporaries_are_removed_by_the_next_run(env):
    run = env["out"] / "run"
    run.mkdir()
    stale = run / ".checkpoint_00000007.pt.ab_cd123.partial.pt"
    mine = run / "checkpoint_notes.partial.pt"
    for path in (stale, mine):
        path.write_bytes(b"x")
        os.utime(path, (OLD, OLD))
    assert main([str(a) for a in ["train", "--data-a", env["in"] / "a", "--data-b", env["in"] / "b", "--output", run,
                                  "--iterations", "1", "--tracking", "none", *TINY_NEC_2D]]) == 0
    assert not stale.exists() and mine.read_bytes() == b"x"
    assert {"checkpoint_00000001.pt", "generator.pt"} <= {p.name for p in run.iterdir()}
    assert _temporaries(run) == []
    assert remove_stale_partials(run) == []


def _fail_on_call(monkeypatch, target, name: str, n: int) -> None:
    """Make ``target.name`` fail with a full disk on its ``n``-th call."""
    real, calls = getattr(target, name), []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == n:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(*args, **kwargs)

    monkeypatch.setattr(target, name, failing)


@pytest.mark.parametrize("target,name,n", [(medtrans.io.outputs.nib, "save", 3), (medtrans.io.outputs.os, "replace", 2),
                                           (medtrans.io.outputs.os, "replace", 4)])
def test_a_translation_and_its_maps_appear_together_or_not_at_all(env, capsys, monkeypatch, target, name, n):
    out = env["out"]
    (out / "f.nii.gz").write_bytes(b"an earlier map")  # existed before: kept if nothing was renamed over it yet
    _fail_on_call(monkeypatch, target, name, n)
    line = refused(capsys, translate(env, env["t1"], out / "o.nii.gz", "--faithfulness-map", out / "f.nii.gz"),
                   "No space left on device")
    assert sorted(p.name for p in out.iterdir()) == ["f.nii.gz"], line
    if name == "save":
        assert (out / "f.nii.gz").read_bytes() == b"an earlier map"


def test_evaluate_writes_its_table_and_summary_together(env, capsys, monkeypatch):
    out = env["out"]
    _fail_on_call(monkeypatch, medtrans.io.outputs.os, "replace", 2)
    refused(capsys, ["evaluate", env["t1"], env["t2"], "--csv", out / "s.csv"], "s_summary.csv", "No space left")
    assert list(out.iterdir()) == []
    monkeypatch.undo()
    assert main(["evaluate", str(env["t1"]), str(env["t2"]), "--csv", str(out / "s.csv")]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["s.csv", "s_summary.csv"]


def test_atomic_write_many_rolls_back_on_an_interrupt(tmp_path):
    (tmp_path / "b.txt").write_text("old")

    def interrupted(tmp):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write_many([(tmp_path / "a.txt", lambda tmp: Path(tmp).write_text("a")),
                           (tmp_path / "b.txt", lambda tmp: Path(tmp).write_text("b")),
                           (tmp_path / "c.txt", interrupted)])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.txt"] and (tmp_path / "b.txt").read_text() == "old"
    os.symlink(tmp_path, tmp_path / "link")
    with pytest.raises(InputError, match="written twice"):
        atomic_write_many([(tmp_path / "a.txt", print), (tmp_path / "link" / "a.txt", print)])
    assert atomic_write_many([(tmp_path / "a.txt", lambda tmp: Path(tmp).write_text("a")),
                              (tmp_path / "b.txt", lambda tmp: Path(tmp).write_text("b"))]) == [tmp_path / "a.txt",
                                                                                                 tmp_path / "b.txt"]
    assert (tmp_path / "b.txt").read_text() == "b" and oct((tmp_path / "a.txt").stat().st_mode & 0o777) != "0o600"


def test_a_folder_whose_volumes_all_fail_leaves_no_output_folder(env, capsys):
    folder = env["root"] / "broken"
    folder.mkdir()
    for name in ("x.nii.gz", "y.nii.gz"):
        (folder / name).write_bytes(np.random.default_rng(0).bytes(3000))
    out, maps = env["out"] / "translated", env["out"] / "maps"
    code = main([str(a) for a in translate(env, folder, out, "--faithfulness-map", maps)])
    err = capsys.readouterr().err
    assert code == 1 and "2 of 2 volumes failed" in err and "Traceback" not in err
    assert list(env["out"].iterdir()) == []
    existing = env["out"] / "mine"
    existing.mkdir()
    assert main([str(a) for a in translate(env, folder, existing)]) == 1
    assert existing.is_dir() and list(existing.iterdir()) == []  # not created by translate: left as it was


def test_a_failed_train_leaves_no_folder_it_created(env, capsys, monkeypatch):
    from medtrans.engine.trainer import TranslationTrainer

    def fail(self, engine, batch):
        raise KeyboardInterrupt

    monkeypatch.setattr(TranslationTrainer, "_iteration", fail)
    train = ["train", "--data-a", env["in"] / "a", "--data-b", env["in"] / "b", "--iterations", "2", *TINY_NEC_2D]
    created = env["out"] / "new" / "run"
    assert main([str(a) for a in [*train, "--output", created]]) == 130  # tensorboard had begun its log there
    assert "medtrans train: interrupted" in capsys.readouterr().err
    assert list(env["out"].iterdir()) == []
    existing = env["out"] / "existing"
    existing.mkdir()
    (existing / "notes.txt").write_text("mine")
    assert main([str(a) for a in [*train, "--output", existing]]) == 130
    assert sorted(p.name for p in existing.iterdir()) == ["notes.txt"]
    assert (existing / "notes.txt").read_text() == "mine"
