"""Exact resume after a hard kill, the divergence guard, and what a checkpoint holds."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from medtrans.data import ImageRecord
from medtrans.engine import TrainStream, TranslationTrainer, latest_checkpoint
from medtrans.methods import DivergenceError, build_method
from medtrans.model import load_model
from medtrans.utils import seed_everything
from tests.conftest import REPO, shared_file

DRIVER = """
import json, sys
from medtrans.data import ImageRecord
from medtrans.engine import TrainStream, TranslationTrainer
from medtrans.methods import build_method
from medtrans.utils import seed_everything
cfg = json.loads(sys.argv[1])
seed_everything(0)
method = build_method("cyclegan", spatial_dims=2, generator={"channels": 4, "num_res_blocks": 1},
                      discriminator={"channels": 4, "num_layers": 2}, pool_size=3)
stream = TrainStream([ImageRecord("a", cfg["a"])], [ImageRecord("b", cfg["b"])],
                     {"patch_size": [32, 32, 1], "samples_per_volume": 3, "max_length": 6}, batch_size=2, seed=5)
TranslationTrainer(method, stream, cfg["out"], max_epochs=cfg["epochs"], epoch_length=4, save_interval=4,
                   device="cpu", tracking="none", progress=False, target_intensity={"type": "source"}).run()
"""


def _run(cfg: dict, wait_for: Path | None = None) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, json.dumps(cfg)], env=env, stderr=subprocess.PIPE, text=True)
    if wait_for is None:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
        return
    deadline = time.monotonic() + 300
    while not wait_for.exists():
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)  # a hard kill, mid-training
    proc.wait()


@pytest.mark.slow
def test_resume_after_hard_kill_equals_one_run(tmp_path):
    data = {"a": str(shared_file("spm-templates/canonical/avg152T1.nii")), "b": str(shared_file("spm-templates/canonical/avg152T2.nii"))}
    _run({**data, "out": str(tmp_path / "one"), "epochs": 4})  # 16 iterations in one go
    killed = tmp_path / "killed"
    _run({**data, "out": str(killed), "epochs": 1000}, wait_for=killed / "checkpoint_00000004.pt")
    assert latest_checkpoint(killed).name < "checkpoint_00000016.pt"
    _run({**data, "out": str(killed), "epochs": 4})  # resumes from the newest checkpoint, runs to 16
    one = torch.load(tmp_path / "one" / "checkpoint_00000016.pt", weights_only=True)
    resumed = torch.load(killed / "checkpoint_00000016.pt", weights_only=True)
    for key, value in one["training"]["networks"].items():
        if isinstance(value, torch.Tensor):
            assert torch.allclose(value, resumed["training"]["networks"][key], atol=1e-6), key
    pool_one = one["training"]["networks"]["pool_a._extra_state"]["images"]
    pool_resumed = resumed["training"]["networks"]["pool_a._extra_state"]["images"]
    assert len(pool_one) == 3 and all(torch.allclose(x, y, atol=1e-6) for x, y in zip(pool_one, pool_resumed))
    assert one["engine"] == resumed["engine"] == {"iteration": 16, "epoch": 4}


def _tiny_trainer(tmp_path, method, **kwargs):
    a = ImageRecord("a", shared_file("spm-templates/canonical/avg152T1.nii"))
    b = ImageRecord("b", shared_file("spm-templates/canonical/avg152T2.nii"))
    stream = TrainStream([a], [b], {"patch_size": [32, 32, 1], "samples_per_volume": 2, "max_length": 4}, batch_size=2)
    return TranslationTrainer(method, stream, tmp_path, device="cpu", tracking="none", progress=False, **kwargs)


def test_divergence_stops_training_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    seed_everything(0)
    method = build_method("nec", spatial_dims=2, generator={"channels": (4, 8), "strides": (2,)},
                          discriminator={"channels": 4, "num_layers": 2, "num_scales": 1})
    trainer = _tiny_trainer(tmp_path, method, max_epochs=5, epoch_length=2, save_interval=2)
    original = type(method).train_step

    def poisoned(self, batch):
        if self.iteration == 3:
            batch = {**batch, "a": batch["a"] * float("nan")}
        return original(self, batch)

    monkeypatch.setattr(type(method), "train_step", poisoned)
    with pytest.raises(DivergenceError, match="nan.* at iteration 3"):
        trainer.run()
    assert sorted(p.name for p in tmp_path.glob("checkpoint_*.pt")) == ["checkpoint_00000002.pt"]
    assert all(torch.isfinite(p).all() for p in method.parameters())  # the bad step touched no weight
    model = load_model(tmp_path / "checkpoint_00000002.pt")
    assert all(torch.isfinite(t).all() for t in model.network.state_dict().values())


def test_checkpoint_contents(tmp_path):
    seed_everything(0)
    method = build_method("cut", spatial_dims=2, generator={"channels": 4, "num_res_blocks": 1},
                          discriminator={"channels": 4, "num_layers": 2}, num_patches=16, lr_decay_iters=4)
    trainer = _tiny_trainer(tmp_path, method, max_epochs=1, epoch_length=2, config={"method": "cut", "seed": 0})
    trainer.run()
    state = torch.load(tmp_path / "checkpoint_00000002.pt", weights_only=True)
    assert set(state) == {"format", "method", "training", "engine", "rng", "config", "generator"}
    assert set(state["training"]["optimizers"]) == {"generator", "discriminator"}
    assert state["training"]["schedulers"]["generator"]["last_epoch"] == 2
    assert method.optimizers["generator"].param_groups[0]["lr"] == pytest.approx(2e-4 * 0.5)  # linear decay
    assert state["config"] == {"method": "cut", "seed": 0}
    assert state["generator"]["target_intensity"]["type"] == "window"  # domain B's per-dataset range


def test_ranks_get_their_own_subject_shards():
    records = [ImageRecord(f"s{i}", shared_file("spm-templates/canonical/avg152T1.nii")) for i in range(5)]
    stream = TrainStream(records, records, {"patch_size": [16, 16, 1]}, seed=3)
    shards = []
    for rank in range(2):
        stream.rank, stream.world = rank, 2
        shards.append(set(stream._sampler(list(range(5)), 0)))
    # DistributedSampler pads 5 subjects to 3 per rank by repeating one: full coverage, overlap only from padding
    assert shards[0] | shards[1] == set(range(5)) and len(shards[0] & shards[1]) <= 1
    assert len(shards[0]) == len(shards[1]) == 3


def test_validation_scores_whole_volumes_and_keeps_the_best_generator(tmp_path):
    seed_everything(0)
    method = build_method("pix2pix", spatial_dims=2, generator={"channels": (4, 8), "strides": (2,)},
                          discriminator={"channels": 4, "num_layers": 2})
    a = ImageRecord("s", shared_file("spm-templates/canonical/avg152T1.nii"))
    b = ImageRecord("s", shared_file("spm-templates/canonical/avg152T2.nii"))
    stream = TrainStream([a], [b], {"patch_size": [32, 32, 1], "samples_per_volume": 2, "max_length": 4}, batch_size=2,
                         paired=True)
    validation = {"pairs": [[str(a.image), str(b.image), None]], "interval": 1, "metric": "psnr"}
    trainer = TranslationTrainer(method, stream, tmp_path, max_epochs=2, epoch_length=2, device="cpu", tracking="none",
                                 progress=False, validation=validation)
    trainer.run()
    metrics = trainer.state.metrics
    assert set(metrics) == {"val_psnr", "val_ssim", "val_mae"}
    assert 0 < metrics["val_psnr"] < 60 and -1 <= metrics["val_ssim"] <= 1 and metrics["val_mae"] > 0
    best = load_model(tmp_path / "best_generator.pt")
    assert best.spatial_dims == 2 and trainer.best >= metrics["val_psnr"] - 1e-9
