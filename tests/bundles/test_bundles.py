"""Each bundle through monai.bundle, as MONAI's model-zoo CI does: shrunken overrides, train, infer, verify, export."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigWorkflow

from medtrans.model import load_model
from tests.conftest import REPO, shared_file

BUNDLES = sorted(p.name for p in (REPO / "bundles").iterdir() if (p / "configs" / "train.yaml").exists())
UNET = {"channels": [4, 8], "strides": [2]}
RESNET = {"channels": 4, "num_res_blocks": 1}
TINY_G = {"pix2pix": UNET, "nec": UNET, "unit": {"channels": 4, "num_res_blocks": 2, "num_shared_blocks": 1}}
TINY_D = {"nec": {"channels": 4, "num_layers": 2, "num_scales": 1}, "unit": {"channels": 4, "num_layers": 2, "num_scales": 1}}
SPM = "spm-templates"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Two subjects per domain (SPM templates), paired by file name, so every bundle — pix2pix too — can use it."""
    root = tmp_path_factory.mktemp("data")
    for domain, files in {"A": ("canonical/avg152T1.nii", "OldNorm/T1.nii"), "B": ("canonical/avg152T2.nii", "OldNorm/T2.nii")}.items():
        (root / domain).mkdir()
        for subject, f in zip(("s1", "s2"), files):
            shutil.copy(shared_file(f"{SPM}/{f}"), root / domain / f"{subject}.nii")
    return root


def tiny_overrides(name: str, dataset: Path, bundle_root: Path, dims: int = 2) -> dict:
    return {
        "bundle_root": str(bundle_root),
        "dataset_dir": str(dataset),
        "spatial_dims": dims,
        "patch_size": [32, 32, 1] if dims == 2 else [24, 24, 24],
        "batch_size": 2 if dims == 2 else 1,
        "generator": TINY_G.get(name, RESNET),
        "discriminator": TINY_D.get(name, {"channels": 4, "num_layers": 2}),
        "train#data#patch#num_workers": 0,
        "train#data#patch#samples_per_volume": 2,
        "train#data#patch#max_length": 4,
        "train#trainer#max_epochs": 1,
        "train#trainer#epoch_length": 2,
        "train#trainer#tracking": "none",
        "train#trainer#montage_interval": 0,
    }


def _copy(name: str, tmp_path: Path) -> Path:
    root = tmp_path / name
    shutil.copytree(REPO / "bundles" / name, root)
    return root


def _workflow(config: Path, **overrides) -> ConfigWorkflow:
    workflow = ConfigWorkflow(config_file=str(config), workflow_type=None, **overrides)
    workflow.initialize()
    return workflow


def test_every_method_has_a_bundle():
    from medtrans.methods import method_names

    assert BUNDLES == method_names()
    for name in BUNDLES:
        for part in ("configs/metadata.json", "configs/train.yaml", "configs/inference.yaml",
                     "configs/multi_gpu_train.yaml", "configs/logging.conf", "docs/README.md", "LICENSE"):
            assert (REPO / "bundles" / name / part).is_file(), (name, part)


@pytest.mark.slow
@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("name", BUNDLES)
def test_bundle_trains_and_translates(name, dims, dataset, tmp_path):
    root = _copy(name, tmp_path)
    train = _workflow(root / "configs" / "train.yaml", **tiny_overrides(name, dataset, root, dims))
    train.run()
    train.finalize()
    assert (root / "runs" / "checkpoint_00000002.pt").exists()
    assert load_model(root).spatial_dims == dims  # models/model.pt is the generator record
    infer = _workflow(root / "configs" / "inference.yaml", bundle_root=str(root), dataset_dir=str(dataset / "A"),
                      roi_size=[48, 48, 48])
    infer.run()
    for subject in ("s1", "s2"):
        out, src = nib.load(root / "eval" / f"{subject}.nii"), nib.load(dataset / "A" / f"{subject}.nii")
        assert out.shape == src.shape and np.allclose(out.affine, src.affine)


def test_verify_metadata_offline():
    for name in BUNDLES:
        done = subprocess.run(
            [sys.executable, "-m", "monai.bundle", "verify_metadata", "--meta_file", f"bundles/{name}/configs/metadata.json",
             "--filepath", "bundles/meta_schema.json"], cwd=REPO, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 and "metadata is verified with no error" in done.stdout + done.stderr, done.stderr[-2000:]


@pytest.mark.slow
def test_ckpt_export_of_the_generator(dataset, tmp_path):
    root = _copy("nec", tmp_path)
    train = _workflow(root / "configs" / "train.yaml", **tiny_overrides("nec", dataset, root))
    train.run()
    train.finalize()
    done = subprocess.run(
        [sys.executable, "-m", "monai.bundle", "ckpt_export", "network_def", "--filepath", str(root / "models" / "model.ts"),
         "--ckpt_file", str(root / "models" / "model.pt"), "--key_in_ckpt", "state_dict",
         "--meta_file", str(root / "configs" / "metadata.json"), "--config_file", str(root / "configs" / "inference.yaml"),
         "--use_trace", "True", "--input_shape", "[1,1,32,32]", "--spatial_dims", "2",
         "--network_def#channels", "[4,8]", "--network_def#strides", "[2]"],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    exported = torch.jit.load(str(root / "models" / "model.ts"))
    x = torch.rand(1, 1, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(exported(x), load_model(root).network(x), atol=1e-5)


@pytest.mark.slow
def test_torchrun_two_processes_gloo(dataset, tmp_path):
    root = _copy("cyclegan", tmp_path)
    overrides = tiny_overrides("cyclegan", dataset, root)
    args = []
    for key, value in overrides.items():
        args += [f"--{key}", repr(value) if not isinstance(value, str) else value]
    configs = f"['{root}/configs/train.yaml','{root}/configs/multi_gpu_train.yaml']"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29517", "-m", "monai.bundle",
         "run", "--config_file", configs, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-4000:])
    assert (root / "runs" / "checkpoint_00000002.pt").exists() and (root / "models" / "model.pt").exists()
