import nibabel as nib
import numpy as np
import pytest

from medtrans.commands.cli import main
from medtrans.commands.train import parse_assignments
from medtrans.errors import InputError
from tests.conftest import synthetic_domains


def test_parse_assignments():
    assert parse_assignments(["lambda_ngf=10", 'generator={"channels": [4, 8]}', "variant=fastcut"]) == {
        "lambda_ngf": 10, "generator": {"channels": [4, 8]}, "variant": "fastcut"}
    with pytest.raises(InputError, match="KEY=VALUE"):
        parse_assignments(["oops"])


def test_train_command_end_to_end(tmp_path, synthetic_brains):
    synthetic_domains(tmp_path, synthetic_brains)
    run = tmp_path / "run"
    code = main(["train", "--method", "nec", "--data-a", str(tmp_path / "a"), "--data-b", str(tmp_path / "b"),
                 "--output", str(run), "--dims", "2", "--patch-size", "32", "32", "1", "--batch-size", "2",
                 "--iterations", "5", "--checkpoint-interval", "2", "--workers", "0", "--tracking", "none", "--no-progress",
                 "--validate", str(tmp_path / "a" / "s1.nii"), str(tmp_path / "b" / "s1.nii"),
                 "--set", 'generator={"channels": [4, 8], "strides": [2]}',
                 'discriminator={"channels": 4, "num_layers": 2, "num_scales": 1}'])
    assert code == 0
    # exactly 5 iterations, saved at the end whatever the checkpoint interval
    assert {"checkpoint_00000004.pt", "checkpoint_00000005.pt", "generator.pt", "best_generator.pt"} <= {p.name for p in run.iterdir()}
    assert not (run / "checkpoint_00000006.pt").exists()
    out = tmp_path / "t2.nii.gz"
    assert main(["translate", str(tmp_path / "a" / "s1.nii"), str(out), "--model", str(run / "generator.pt"),
                 "--no-progress"]) == 0
    assert nib.load(out).shape == nib.load(tmp_path / "a" / "s1.nii").shape == (98, 116, 94)
    assert np.isfinite(nib.load(out).get_fdata()).all()


def test_mlflow_tracking_records_losses(tmp_path, synthetic_brains):
    mlflow = pytest.importorskip("mlflow", reason="the 'tracking' extra is not installed")
    synthetic_domains(tmp_path, synthetic_brains)
    run = tmp_path / "run"
    assert main(["train", "--method", "cut", "--data-a", str(tmp_path / "a"), "--data-b", str(tmp_path / "b"),
                 "--output", str(run), "--dims", "2", "--patch-size", "32", "32", "1", "--iterations", "2",
                 "--workers", "0", "--tracking", "mlflow", "--log-interval", "1", "--no-progress",
                 "--set", 'generator={"channels": 4, "num_res_blocks": 1}', "num_patches=16",
                 'discriminator={"channels": 4, "num_layers": 2}']) == 0
    mlflow.set_tracking_uri(f"sqlite:///{run / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["medtrans"])
    assert len(runs) == 1 and "metrics.nce" in runs.columns and runs["params.method"][0] == "cut"
