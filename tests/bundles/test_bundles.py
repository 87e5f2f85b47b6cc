"""Each bundle through monai.bundle, as MONAI's model-zoo CI does: shrunken overrides, train, infer, verify, export;
and the full cycle of docs/bundles.md run exactly as written."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser, ConfigWorkflow

from medtrans.model import load_model
from tests.conftest import REPO, synthetic_domains, synthetic_nii, synthetic_pair

BUNDLES = sorted(p.name for p in (REPO / "bundles").iterdir() if (p / "configs" / "metadata.json").exists())
BASE = REPO / "bundles" / "base" / "configs"
UNET = {"channels": [4, 8], "strides": [2]}
RESNET = {"channels": 4, "num_res_blocks": 1}
TINY_G = {"pix2pix": UNET, "nec": UNET, "unit": {"channels": 4, "num_res_blocks": 2, "num_shared_blocks": 1}}
PATCH_D = {"channels": 4, "num_layers": 2}
TINY_D = {"nec": {**PATCH_D, "num_scales": 1}, "unit": {**PATCH_D, "num_scales": 1}}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, synthetic_brains):
    """Two synthetic subjects per domain (T1w in A, their T2w in B), paired by file name, so every bundle — pix2pix too
    — can use it."""
    root = tmp_path_factory.mktemp("data")
    for domain in ("A", "B"):
        (root / domain).mkdir()
    for i, subject in enumerate(("s1", "s2")):
        for domain, path in zip(("A", "B"), synthetic_pair(synthetic_brains, f"test{i:02d}")):
            synthetic_nii(path, root / domain / f"{subject}.nii")
    return root


def tiny_networks(name: str) -> dict:
    """The smallest generator and discriminator settings method ``name`` trains with."""
    return {"generator": TINY_G.get(name, RESNET), "discriminator": TINY_D.get(name, PATCH_D)}


def tiny_overrides(name: str, dataset: Path, bundle_root: Path, dims: int = 2) -> dict:
    return {
        "bundle_root": str(bundle_root),
        "dataset_dir": str(dataset),
        "spatial_dims": dims,
        "patch_size": [32, 32, 1] if dims == 2 else [24, 24, 24],
        "batch_size": 2 if dims == 2 else 1,
        **tiny_networks(name),
        "train#data#patch#num_workers": 0,
        "iterations": 2,
        "train#trainer#tracking": "none",
        "train#trainer#montage_interval": 0,
    }


def _copy(name: str, tmp_path: Path) -> Path:
    """A copy of the method bundle and of the shared base beside it (a method bundle needs its base)."""
    for folder in (name, "base"):
        if not (tmp_path / folder).exists():
            shutil.copytree(REPO / "bundles" / folder, tmp_path / folder)
    return tmp_path / name


def _workflow(configs: list[Path], root: Path, **overrides) -> ConfigWorkflow:
    workflow = ConfigWorkflow(config_file=[str(c) for c in configs], meta_file=str(root / "configs" / "metadata.json"),
                              workflow_type=None, **overrides)
    workflow.initialize()
    return workflow


def _train_configs(root: Path) -> list[Path]:
    return [root.parent / "base" / "configs" / "train.yaml", root / "configs" / "train.yaml"]


def test_every_method_has_a_bundle():
    from medtrans.methods import method_names

    assert BUNDLES == method_names()
    for name in BUNDLES:
        for part in ("configs/metadata.json", "configs/train.yaml", "docs/README.md", "LICENSE"):
            assert (REPO / "bundles" / name / part).is_file(), (name, part)
    for part in ("train.yaml", "inference.yaml", "multi_gpu_train.yaml", "logging.conf"):
        assert (BASE / part).is_file(), part


def test_bundle_configs_are_ascii():
    """MONAI reads a bundle's configs in the locale's encoding: on an ASCII-only terminal (LC_ALL=C) a non-ASCII
    character would stop every ``monai.bundle`` command."""
    for path in sorted((REPO / "bundles").glob("*/configs/*")):
        text = path.read_bytes()
        assert text.isascii(), f"{path.relative_to(REPO)}: non-ASCII at byte {next(i for i, b in enumerate(text) if b > 127)}"


def test_method_bundles_state_only_what_differs_from_the_base():
    import yaml

    base = yaml.safe_load((BASE / "train.yaml").read_text(encoding="utf-8"))
    for name in BUNDLES:
        own = yaml.safe_load((REPO / "bundles" / name / "configs" / "train.yaml").read_text(encoding="utf-8"))
        assert own == {"method#name": name}  # every other setting is shared (or the method's own default)
        assert base["method"]["name"] is None


T1_T2 = {"nec": {}, "cut": {"lambda_nce": 0.1}, "cyclegan": {"lambda_identity": 0}}  # options besides structure losses
PRIOR_THEN_MI = {"nec", "cut"}  # the T1 -> T2 experiments that start at the inverted source, then keep MI


@pytest.mark.parametrize("name", sorted(T1_T2))
def test_a_t1_t2_experiment_states_only_what_differs(name):
    import yaml
    from monai.bundle import ConfigParser

    from medtrans.losses import MutualInformationLoss, PolarityLoss

    root = REPO / "bundles" / name / "configs"
    prior = name in PRIOR_THEN_MI
    own = yaml.safe_load((root / "t1_t2.yaml").read_text(encoding="utf-8"))
    assert set(own) == {f"method#{k}" for k in T1_T2[name]} | ({"method#structure_losses"} if prior else set())
    parser = ConfigParser()
    parser.read_config([str(BASE / "train.yaml"), str(root / "train.yaml"), str(root / "t1_t2.yaml")])
    parser.update(tiny_networks(name))
    method = parser.get_parsed_content("method")
    assert {k: getattr(method, k) for k in T1_T2[name]} == T1_T2[name]
    assert [type(t) for t in method.structure_terms] == ([PolarityLoss, MutualInformationLoss] if prior else [])
    if prior:
        assert method.structure_terms[0].polarity_type == "inverted"
        assert [s.get("cooldown") for s in method.structure_specs] == [[0, 200], None]


@pytest.mark.slow
@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("name", BUNDLES)
def test_bundle_trains_and_translates(name, dims, dataset, tmp_path):
    root = _copy(name, tmp_path)
    train = _workflow(_train_configs(root), root, **tiny_overrides(name, dataset, root, dims))
    train.run()
    train.finalize()
    assert (root / "runs" / "checkpoint_00000002.pt").exists()
    assert load_model(root).spatial_dims == dims  # models/model.pt is the generator record
    infer = _workflow([root.parent / "base" / "configs" / "inference.yaml"], root, bundle_root=str(root),
                      dataset_dir=str(dataset / "A"), roi_size=[48, 48, 48])
    infer.run()
    for subject in ("s1", "s2"):
        out, src = nib.load(root / "eval" / f"{subject}.nii"), nib.load(dataset / "A" / f"{subject}.nii")
        assert out.shape == src.shape and np.allclose(out.affine, src.affine)


def test_verify_metadata_offline():
    for name in BUNDLES:
        done = subprocess.run(
            [sys.executable, "-m", "monai.bundle", "verify_metadata", "--meta_file", f"bundles/{name}/configs/metadata.json",
             "--filepath", "bundles/meta_schema.json"], cwd=REPO, capture_output=True, encoding="utf-8", timeout=120)
        assert done.returncode == 0 and "metadata is verified with no error" in done.stdout + done.stderr, done.stderr[-2000:]


def _documented_cycle() -> str:
    """The shell block of docs/bundles.md under "The full cycle"."""
    text = (REPO / "docs" / "bundles.md").read_text(encoding="utf-8")
    section = text.split("## The full cycle", 1)[1]
    return section.split("```bash\n", 1)[1].split("```", 1)[0]


@pytest.mark.slow
def test_the_documented_cycle_runs_as_written(dataset, tmp_path):
    """docs/bundles.md's commands, verbatim, from a copy of the repository root (so nothing is written into the
    checkout), with DATA and the input file pointing at test data: train, inference, translate, export."""
    root = tmp_path / "repo"
    shutil.copytree(REPO / "bundles", root / "bundles")
    script = _documented_cycle()
    assert "--bundle_root bundles/nec" in script and "medtrans translate" in script and "ckpt_export" in script
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           "DATA": str(dataset), "T1": str(dataset / "A" / "s1.nii")}
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=root, env=env, capture_output=True, encoding="utf-8",
                          timeout=600)
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])
    nec = root / "bundles" / "nec"
    assert (nec / "models" / "model.pt").exists() and (nec / "runs").is_dir()
    assert sorted(p.name for p in (nec / "eval").iterdir()) == ["s1.nii", "s1.nii.ood.json", "s2.nii",
                                                             "s2.nii.ood.json"]
    source, translated = nib.load(dataset / "A" / "s1.nii"), nib.load(root / "t2_synth.nii.gz")
    assert translated.shape == source.shape and np.allclose(translated.affine, source.affine)
    exported = torch.jit.load(str(nec / "models" / "model.ts"))
    x = torch.rand(1, 1, 64, 64, 64) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(exported(x), load_model(nec).network(x), atol=1e-5)
    assert not list(Path.cwd().glob("models")) and not (Path.cwd() / "runs").exists()  # nothing in the current folder


@pytest.mark.slow
def test_a_bundle_copied_anywhere_runs_from_any_folder(dataset, tmp_path):
    root = _copy("pix2pix", tmp_path / "elsewhere")
    overrides = tiny_overrides("pix2pix", dataset, root)
    args = []
    for key, value in overrides.items():
        args += [f"--{key}", repr(value) if not isinstance(value, str) else value]
    cwd = tmp_path / "somewhere_else"
    cwd.mkdir()
    configs = f"['{root.parent}/base/configs/train.yaml','{root}/configs/train.yaml']"
    done = subprocess.run([sys.executable, "-m", "monai.bundle", "run", "--config_file", configs, "--meta_file",
                           str(root / "configs" / "metadata.json"), *args], cwd=cwd, capture_output=True, encoding="utf-8",
                          timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert (root / "models" / "model.pt").exists() and list(cwd.iterdir()) == []


def test_a_bundle_without_bundle_root_says_so(dataset, tmp_path):
    root = _copy("nec", tmp_path)
    overrides = {k: v for k, v in tiny_overrides("nec", dataset, root).items() if k != "bundle_root"}
    with pytest.raises(RuntimeError) as caught:  # MONAI wraps the config's error; ours is its cause
        _workflow(_train_configs(root), root, **overrides).run()
    assert "bundle_root is not set: add --bundle_root" in str(caught.value.__cause__)
    assert not (Path.cwd() / "runs").exists()


@pytest.mark.slow
def test_torchrun_two_processes_gloo(dataset, tmp_path):
    root = _copy("cyclegan", tmp_path)
    overrides = tiny_overrides("cyclegan", dataset, root)
    args = []
    for key, value in overrides.items():
        args += [f"--{key}", repr(value) if not isinstance(value, str) else value]
    configs = f"['{root.parent}/base/configs/train.yaml','{root}/configs/train.yaml','{root.parent}/base/configs/multi_gpu_train.yaml']"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29517", "-m", "monai.bundle",
         "run", "--config_file", configs, "--meta_file", str(root / "configs" / "metadata.json"), *args],
        cwd=REPO, env=env, capture_output=True, encoding="utf-8", timeout=300)
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-4000:])
    assert (root / "runs" / "checkpoint_00000002.pt").exists() and (root / "models" / "model.pt").exists()


def test_a_bundle_instantiates_torchio_transforms(tmp_path, synthetic_brains):
    """A domain's transform written with MONAI's `_target_` syntax reaches the stream: an affine map of both images of
    a pair, a gamma of A."""
    a, b = synthetic_domains(tmp_path, synthetic_brains)
    shutil.copy(a / "s1.nii", b / "s1.nii")  # B is A: pairs of one image
    parser = ConfigParser()
    parser.read_config([str(BASE / "train.yaml"), str(REPO / "bundles/pix2pix/configs/train.yaml")])
    parser.update({"domain_a": str(a), "domain_b": str(b), "spatial_dims": 2, "patch_size": [32, 32, 1],
                   "train#data#patch#num_workers": 0, "train#data#paired": True,  # pix2pix's, without building it
                   "transform_a": {"_target_": "torchio.Compose", "transforms": [
                       {"_target_": "torchio.RandomAffine", "degrees": 10},
                       {"_target_": "torchio.RandomGamma", "log_gamma": [0.5, 0.5]}]}})
    stream = parser.get_parsed_content("train#data")
    assert stream.paired and stream.augment is not None
    batch = next(stream)
    assert torch.allclose(batch["a"], 2 * ((batch["b"] + 1) / 2) ** np.exp(0.5) - 1, atol=1e-5)  # A's gamma
