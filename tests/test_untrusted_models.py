"""A translator file is data: loading one through any entry point never runs code from it.

Each payload that MONAI's ConfigParser would have run (a ``$`` expression, a nested ``_target_``, ``_requires_``, a
``_target_`` that only starts like a medtrans name) is planted in a real translator record. Every way of loading a
translator — ``medtrans translate`` given a generator file, a trainer checkpoint or a bundle folder, the bundles'
inference config and ``ckpt_export`` through ``python -m monai.bundle``, MONAI Label's task, ``medtrans train
--set`` — must refuse it with one line, exit status 1, and leave no marker file.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from medtrans.commands.cli import main
from medtrans.model import TranslationModel
from medtrans.networks.registry import build_network
from tests.conftest import REPO

NET = {"_target_": "medtrans.networks.UNetGenerator", "spatial_dims": 3, "channels": [4, 8], "strides": [2]}
LABEL_PYTHON = Path(os.environ.get("MEDTRANS_LABEL_PYTHON", REPO / ".venv-label" / "bin" / "python"))


def _payloads(marker: Path) -> dict[str, dict]:
    """Mutations of a record's ``network_def``; each would have created ``marker`` under the old loader."""
    run = f"__import__('os').system('touch {marker}')"
    return {
        "expression": {"channels": f"${run} or [4, 8]"},
        "nested_target": {"norm": {"_target_": "os.system", "command": f"touch {marker}"}},
        "requires": {"_requires_": f"${run}"},
        "target_prefix": {"_target_": "medtrans.io.os.system", "command": f"touch {marker}"},
    }


@pytest.fixture(scope="module")
def volume(tmp_path_factory) -> Path:
    """A 24³ volume with a bright ball, 1 mm, RAS."""
    grid = np.stack(np.meshgrid(*[np.arange(24)] * 3, indexing="ij"))
    data = 100.0 + 400.0 * (((grid - 12) ** 2).sum(0) < 49) + np.random.default_rng(0).normal(0, 5, (24,) * 3)
    path = tmp_path_factory.mktemp("input") / "t1.nii.gz"
    nib.save(nib.Nifti1Image(data.astype(np.float32), np.eye(4)), path)
    return path


def _record() -> dict:
    torch.manual_seed(0)
    return TranslationModel(build_network(NET), NET, 3).record()


def _evil(folder: Path, mutation: dict, kind: str) -> Path:
    """An evil translator of ``kind``: a generator file, a trainer checkpoint, or a bundle folder."""
    record = _record()
    record["network_def"] = {**record["network_def"], **mutation}
    folder.mkdir(parents=True, exist_ok=True)
    if kind == "generator":
        path = folder / "evil.pt"
        torch.save(record, path)
    elif kind == "checkpoint":
        path = folder / "checkpoint_00000010.pt"
        torch.save({"format": "medtrans.checkpoint/1", "method": "nec", "generator": record}, path)
    else:
        path = folder / "bundle"
        shutil.copytree(REPO / "bundles" / "nec" / "configs", path / "configs")
        (path / "models").mkdir()
        torch.save(record, path / "models" / "model.pt")
    return path


def _one_line(err: str, names: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err and names in lines[0], err


@pytest.mark.parametrize("kind", ["generator", "checkpoint", "bundle"])
@pytest.mark.parametrize("payload", ["expression", "nested_target", "requires", "target_prefix"])
def test_translate_never_runs_a_model_file(payload, kind, volume, tmp_path, capsys):
    marker = tmp_path / "pwned"
    model = _evil(tmp_path / "model", _payloads(marker)[payload], kind)
    out = tmp_path / "out"
    out.mkdir()
    code = main(["translate", str(volume), str(out / "t2.nii.gz"), "--model", str(model), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1 and not marker.exists() and list(out.iterdir()) == []
    _one_line(err, str(model))


def _monai_bundle(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "monai.bundle", *args], cwd=cwd, capture_output=True, encoding="utf-8",
                          timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})


def _all_payloads(marker: Path) -> dict:
    """Every payload in one record: the old loader ran each of them."""
    mutation = {}
    for name in ("expression", "nested_target", "requires"):
        mutation.update(_payloads(marker)[name])
    return mutation


def test_the_bundle_inference_config_never_runs_a_model_file(volume, tmp_path):
    marker = tmp_path / "pwned"
    bundle = _evil(tmp_path, _all_payloads(marker), "bundle")
    shutil.copytree(REPO / "bundles" / "base", tmp_path / "base")
    done = _monai_bundle(["run", "--config_file", str(tmp_path / "base" / "configs" / "inference.yaml"), "--meta_file",
                          str(bundle / "configs" / "metadata.json"), "--bundle_root", str(bundle), "--dataset_dir",
                          str(volume.parent)], tmp_path)
    assert done.returncode == 1 and not marker.exists() and not (bundle / "eval").exists(), done.stderr[-2000:]
    assert done.stderr.strip().splitlines()[-1].startswith("medtrans bundle: error: "), done.stderr[-2000:]
    assert "Traceback" not in done.stderr and "model.pt" in done.stderr


def test_ckpt_export_never_runs_a_model_file(tmp_path):
    marker = tmp_path / "pwned"
    bundle = _evil(tmp_path, _all_payloads(marker), "bundle")
    shutil.copytree(REPO / "bundles" / "base", tmp_path / "base")
    done = _monai_bundle(["ckpt_export", "network_def", "--filepath", str(bundle / "models" / "model.ts"), "--ckpt_file",
                          str(bundle / "models" / "model.pt"), "--key_in_ckpt", "state_dict", "--meta_file",
                          str(bundle / "configs" / "metadata.json"), "--config_file",
                          str(tmp_path / "base" / "configs" / "inference.yaml"), "--bundle_root", str(bundle),
                          "--use_trace", "True", "--input_shape", "[1,1,16,16,16]"], tmp_path)
    assert done.returncode == 1 and not marker.exists() and not (bundle / "models" / "model.ts").exists()
    assert "Traceback" not in done.stderr and "medtrans bundle: error: " in done.stderr, done.stderr[-2000:]


def test_monai_label_never_runs_a_model_file(tmp_path):
    if not LABEL_PYTHON.exists():
        if os.environ.get("CI"):
            pytest.fail(f"the MONAI Label venv {LABEL_PYTHON} is missing in CI (bash run.sh test builds it)")
        pytest.skip(f"no MONAI Label venv at {LABEL_PYTHON}: run bash run.sh test, or set MEDTRANS_LABEL_PYTHON")
    marker = tmp_path / "pwned"
    model = _evil(tmp_path, _all_payloads(marker), "generator")
    script = ("import sys\nfrom medtrans.errors import ModelError\n"
              "from medtrans.integrations.monailabel import TranslationInferTask\n"
              "try:\n    TranslationInferTask(sys.argv[1])\nexcept ModelError as err:\n    print(err)\n    sys.exit(3)\n")
    done = subprocess.run([str(LABEL_PYTHON), "-c", script, str(model)], cwd=REPO, capture_output=True, encoding="utf-8",
                          timeout=300)
    assert done.returncode == 3 and not marker.exists() and "evil.pt" in done.stdout, done.stderr[-2000:]


@pytest.mark.parametrize("value", [
    '{"channels": "$__import__(\'os\').system(\'touch MARKER\') or [4, 8]"}',
    '{"norm": {"_target_": "os.system", "command": "touch MARKER"}}',
    '{"_requires_": "$__import__(\'os\').system(\'touch MARKER\')"}',
])
def test_train_set_values_are_data(value, volume, tmp_path, capsys):
    marker = tmp_path / "pwned"
    code = main(["train", "--method", "nec", "--data-a", str(volume), "--data-b", str(volume), "--output",
                 str(tmp_path / "run"), "--iterations", "1", "--tracking", "none", "--no-progress", "--set",
                 "generator=" + value.replace("MARKER", str(marker))])
    err = capsys.readouterr().err
    assert code == 1 and not marker.exists() and not (tmp_path / "run").exists()
    _one_line(err, "--set")


@pytest.mark.parametrize("change,message", [
    (lambda r: r.pop("network_def"), "record field 'network_def' must be of type dict, got NoneType"),
    (lambda r: r.update(spatial_dims="3"), "record field 'spatial_dims' must be of type int"),
    (lambda r: r.update(spatial_dims=2), "holds a 3D network but its record says 2D"),
    (lambda r: r.update(state_dict=[1, 2]), "record field 'state_dict' must be of type dict"),
    (lambda r: r["state_dict"].update({"unet.model.0.conv.weight": 3}), "must map parameter names to tensors"),
    (lambda r: r.update(preprocessing={"spacing": [1, 1]}), "record is malformed: spacing must be three"),
    (lambda r: r.update(preprocessing={"colour": 1}), "record is malformed: .*colour"),
    (lambda r: r.update(target_intensity={"type": "magic"}), "record is malformed"),
    (lambda r: r.update(inference={"roi_size": [8, 8]}), "record field 'inference' is malformed: roi_size"),
    (lambda r: r.update(inference={"overlap": "$1"}), "record is malformed: inference.overlap is an expression"),
    (lambda r: r.update(extra=1), "record has unknown field.s. extra"),
])
def test_malformed_records_are_one_line(change, message, volume, tmp_path, capsys):
    record = _record()
    change(record)
    model = tmp_path / "bad.pt"
    torch.save(record, model)
    code = main(["translate", str(volume), str(tmp_path / "t2.nii.gz"), "--model", str(model), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1 and not (tmp_path / "t2.nii.gz").exists()
    _one_line(err, "bad.pt: ")
    assert __import__("re").search(message, err), err
