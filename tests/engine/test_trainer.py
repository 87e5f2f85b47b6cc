"""Exact resume after a hard kill, the divergence guard, and what a checkpoint holds."""

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from ignite.engine import Events

from medtrans.data import ImageRecord, TrainStream
from medtrans.engine import TranslationTrainer, latest_checkpoint
from medtrans.methods import DivergenceError, build_method
from medtrans.model import load_model
from medtrans.utils import seed_everything
from tests.conftest import REPO, synthetic_pair

DRIVER = """
import json, sys
from medtrans.data import ImageRecord, TrainStream
from medtrans.engine import TranslationTrainer
from medtrans.methods import build_method
from medtrans.utils import seed_everything
cfg = json.loads(sys.argv[1])
seed_everything(0)
method = build_method("cyclegan", spatial_dims=2, generator={"channels": 4, "num_res_blocks": 1},
                      discriminator={"channels": 4, "num_layers": 2}, pool_size=3)
stream = TrainStream([ImageRecord("a", cfg["a"])], [ImageRecord("b", cfg["b"])], {"patch_size": [32, 32, 1]},
                     batch_size=2, seed=5)
TranslationTrainer(method, stream, cfg["out"], iterations=cfg["iterations"], checkpoint_interval=4,
                   device="cpu", tracking="none", progress=False, target_intensity={"type": "source"}).run()
"""


@pytest.fixture(scope="module")
def pair(synthetic_brains) -> tuple[Path, Path]:
    """A synthetic T1w and its co-registered T2w (the embedded dataset, 98×116×94, 2 mm)."""
    return synthetic_pair(synthetic_brains)


def _run(cfg: dict, wait_for: Path | None = None) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, json.dumps(cfg)], env=env, stderr=subprocess.PIPE, encoding="utf-8")
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
def test_resume_after_hard_kill_equals_one_run(tmp_path, pair):
    data = {"a": str(pair[0]), "b": str(pair[1])}
    _run({**data, "out": str(tmp_path / "one"), "iterations": 16})  # in one go
    killed = tmp_path / "killed"
    _run({**data, "out": str(killed), "iterations": 4000}, wait_for=killed / "checkpoint_00000004.pt")
    assert latest_checkpoint(killed).name < "checkpoint_00000016.pt"
    _run({**data, "out": str(killed), "iterations": 16})  # resumes from the newest checkpoint, runs to 16
    one = torch.load(tmp_path / "one" / "checkpoint_00000016.pt", weights_only=True)
    resumed = torch.load(killed / "checkpoint_00000016.pt", weights_only=True)
    for key, value in one["training"]["networks"].items():
        if isinstance(value, torch.Tensor):
            assert torch.allclose(value, resumed["training"]["networks"][key], atol=1e-6), key
    pool_one = one["training"]["networks"]["pool_a._extra_state"]["images"]
    pool_resumed = resumed["training"]["networks"]["pool_a._extra_state"]["images"]
    assert len(pool_one) == 3 and all(torch.allclose(x, y, atol=1e-6) for x, y in zip(pool_one, pool_resumed))
    assert one["engine"] == resumed["engine"] == {"iteration": 16, "epoch": 4}


def _tiny_trainer(tmp_path, pair, method, **kwargs):
    a, b = ImageRecord("a", pair[0]), ImageRecord("b", pair[1])
    stream = TrainStream([a], [b], {"patch_size": [32, 32, 1]}, batch_size=2)
    return TranslationTrainer(method, stream, tmp_path, device="cpu", tracking="none", progress=False, **kwargs)


def test_divergence_stops_training_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, pair):
    seed_everything(0)
    method = build_method("nec", spatial_dims=2, generator={"channels": (4, 8), "strides": (2,)},
                          discriminator={"channels": 4, "num_layers": 2, "num_scales": 1})
    trainer = _tiny_trainer(tmp_path, pair, method, iterations=10, checkpoint_interval=2)
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


def test_checkpoint_contents(tmp_path, pair):
    seed_everything(0)
    method = build_method("cut", spatial_dims=2, generator={"channels": 4, "num_res_blocks": 1},
                          discriminator={"channels": 4, "num_layers": 2}, num_patches=16, lr_constant_iters=0,
                          lr_decay_iters=4)
    trainer = _tiny_trainer(tmp_path, pair, method, iterations=2, config={"method": "cut", "seed": 0})
    trainer.run()
    state = torch.load(tmp_path / "checkpoint_00000002.pt", weights_only=True)
    assert set(state) == {"format", "method", "training", "engine", "rng", "config", "generator"}
    assert set(state["training"]["optimizers"]) == {"generator", "discriminator"}
    assert state["training"]["schedulers"]["generator"]["last_epoch"] == 2
    assert method.optimizers["generator"].param_groups[0]["lr"] == pytest.approx(2e-4 * 0.5)  # linear decay
    assert state["config"] == {"method": "cut", "seed": 0}
    assert state["generator"]["target_intensity"]["type"] == "window"  # domain B's per-dataset range


def test_validation_scores_whole_volumes_and_keeps_the_best_generator(tmp_path, caplog, pair):
    seed_everything(0)
    method = build_method("pix2pix", spatial_dims=2, generator={"channels": (4, 8), "strides": (2,)},
                          discriminator={"channels": 4, "num_layers": 2})
    a, b = ImageRecord("s", pair[0]), ImageRecord("s", pair[1])
    stream = TrainStream([a], [b], {"patch_size": [32, 32, 1]}, batch_size=2, paired=True)
    validation = {"pairs": [[str(a.image), str(b.image), None]], "metric": "psnr"}
    trainer = TranslationTrainer(method, stream, tmp_path, iterations=3, checkpoint_interval=2, device="cpu",
                                 tracking="none", progress=False, validation=validation)

    with caplog.at_level(logging.INFO, logger="medtrans.train"):
        trainer.run()
    metrics = trainer.state.metrics
    assert set(metrics) == {"val_psnr", "val_ssim", "val_mae", "val_iteration"}
    assert 0 < metrics["val_psnr"] < 60 and -1 <= metrics["val_ssim"] <= 1 and metrics["val_mae"] > 0
    best = load_model(tmp_path / "best_generator.pt")
    assert best.spatial_dims == 2 and trainer.best >= metrics["val_psnr"] - 1e-9
    scored = [r.args[0] for r in caplog.records if r.getMessage().startswith("validation at iteration")]
    assert scored == [2, 3]  # at the checkpoint interval and at the end of the (partial) last period


def _tiny_nec(**kwargs):
    return build_method("nec", spatial_dims=2, generator={"channels": (4, 8), "strides": (2,)},
                        discriminator={"channels": 4, "num_layers": 2, "num_scales": 1}, lr_decay_iters=0, **kwargs)


def test_the_translator_is_the_generators_moving_average_and_resumes_exactly(tmp_path, pair):
    seed_everything(0)
    method = _tiny_nec(ema_decay=0.9)
    trainer = _tiny_trainer(tmp_path / "one", pair, method, iterations=4, checkpoint_interval=2)
    snapshots = [{k: v.clone() for k, v in method.generator.state_dict().items()}]  # the average starts here
    trainer.add_event_handler(Events.ITERATION_COMPLETED,
                              lambda _: snapshots.append({k: v.clone() for k, v in method.generator.state_dict().items()}))
    trainer.run()
    expected = snapshots[0]
    for t, weights in enumerate(snapshots[1:]):
        decay = min(0.9, (1 + t) / (10 + t))
        expected = {k: decay * expected[k] + (1 - decay) * weights[k] for k in expected}
    average = method.generator_ema.state_dict()
    assert all(torch.allclose(average[k], expected[k], atol=1e-6) for k in expected)
    saved = load_model(tmp_path / "one" / "checkpoint_00000004.pt").network.state_dict()
    last = method.generator.state_dict()
    assert all(torch.allclose(saved[k], average[k]) for k in average)  # the translator holds the average...
    assert not all(torch.allclose(saved[k], last[k]) for k in last)  # ...not the last weights

    seed_everything(0)  # the same run, stopped at the checkpoint of iteration 2 and resumed
    _tiny_trainer(tmp_path / "two", pair, _tiny_nec(ema_decay=0.9), iterations=2, checkpoint_interval=2).run()
    seed_everything(0)
    resumed = _tiny_nec(ema_decay=0.9)
    _tiny_trainer(tmp_path / "two", pair, resumed, iterations=4, checkpoint_interval=2).run()
    assert all(torch.allclose(resumed.generator_ema.state_dict()[k], average[k], atol=1e-6) for k in average)
    with pytest.raises(ValueError, match="ema_decay must lie in"):
        _tiny_nec(ema_decay=1.0)
