"""``medtrans train`` launched by torchrun: two gloo processes on CPU, each on its own share of the data."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from medtrans.distributed import process_group_from_environment, rank_and_world
from tests.conftest import synthetic_domains
from tests.test_bad_train import TINY

REPO = Path(__file__).resolve().parents[1]


def _torchrun(a: Path, b: Path, out: Path, iterations: int, cache: Path) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "medtrans",
            "train", "--method", "nec", "--data-a", str(a), "--data-b", str(b), "--output", str(out),
            "--iterations", str(iterations), "--checkpoint-interval", "2", "--patch-size", "16", "16", "16",
            "--workers", "0", "--montage-interval", "0", "--tracking", "none", "--no-progress", "--storage", "disk",
            "--cache-dir", str(cache), "--device", "auto", "--set", *TINY, "lr_decay_iters=0"]  # a rate that no --iterations changes
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run(argv, cwd=REPO, env=env, capture_output=True, encoding="utf-8", timeout=600)


@pytest.mark.slow
def test_two_ranks_train_on_their_own_shards_write_once_and_resume_exactly(tmp_path, synthetic_brains):
    a, b = synthetic_domains(tmp_path, synthetic_brains, ("s1", "s2"))
    cache = tmp_path / "cache"
    done = _torchrun(a, b, tmp_path / "one", 4, cache)
    assert done.returncode == 0, done.stderr[-4000:]
    for rank in (0, 1):  # each rank caches and reads one of the two subjects of each domain
        for domain in ("A", "B"):
            assert re.search(rf"\[rank {rank}\] medtrans\.data domain {domain}: 1 volumes on disk", done.stderr), done.stderr
    assert len(list(cache.iterdir())) == 4  # two subjects per domain, each built by one rank only
    one = tmp_path / "one"
    assert sorted(p.name for p in one.glob("checkpoint_*.pt")) == ["checkpoint_00000002.pt", "checkpoint_00000004.pt"]
    assert (one / "generator.pt").is_file() and not list(one.glob("*.partial*"))

    # stopped at 2, then resumed to 4: the same networks and optimiser moments as one run to 4 (every rank its own RNG)
    assert _torchrun(a, b, tmp_path / "two", 2, cache).returncode == 0
    resumed = _torchrun(a, b, tmp_path / "two", 4, cache)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    first = torch.load(one / "checkpoint_00000004.pt", weights_only=True)
    second = torch.load(tmp_path / "two" / "checkpoint_00000004.pt", weights_only=True)
    assert first["engine"] == second["engine"] == {"iteration": 4, "epoch": 2}
    compared = 0
    for key, value in first["training"]["networks"].items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, second["training"]["networks"][key]), key
            compared += 1
    assert compared > 10


def test_one_process_joins_no_group(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with process_group_from_environment():
        assert rank_and_world() == (0, 1) and not torch.distributed.is_initialized()
