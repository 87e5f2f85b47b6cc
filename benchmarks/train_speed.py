"""Training speed: the bare step of every method, the data stream alone, and the engine against the bare step.

    python benchmarks/train_speed.py [--methods ...] [--dims 2 3] [--precisions fp32 bf16] [--device cpu|cuda]
    python benchmarks/train_speed.py --stream [--reference-checkout DIR] [--batches 400]
    python benchmarks/train_speed.py --engine [--methods nec cyclegan] [--iterations 40] [--device cpu|cuda]

Step table (default): each method × {2D: 128², batch 4; 3D: 48³, batch 1} × precision runs in a fresh subprocess:
one warm-up step, then ``--steps`` timed training steps on random batches in [-1, 1] — the method's own cost
(forward, backward and optimiser steps of every network) without data loading. Networks are the methods' defaults.

``--stream``: :class:`~medtrans.data.TrainStream` alone on the real T1→T2 split of benchmarks/quality.py (A: T1 of
lesjak patient07 + TCGA-DU-7294, B: T2 of lesjak patient19 + TCGA-FG-6692), 48³ patches, batch 1, foreground
sampling: seconds to load, then batches per second, with 0 and 2 loading workers (and the prefetch thread on and off).
With ``--reference-checkout DIR`` the same measurement runs on the medtrans of another checkout (e.g. an older commit
in a git worktree) in the same invocation, so the two are compared side by side.

``--engine``: :class:`~medtrans.engine.TranslationTrainer` on that split against the same method's bare step on a
random batch already on the device, both in this process, at 48³ (3D) — the fraction of the step's speed the
training loop keeps. Iterations after the first ``--warmup`` are timed; the two alternate ``--repeats`` times and the
median of the ratios is reported (a shared machine drifts by ±10 % between runs of a minute).

Prints Markdown tables; memory is the peak resident set (VmHWM) on CPU, ``torch.cuda.max_memory_allocated`` on CUDA.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

DATA = Path(os.environ.get("MEDTRANS_SHARED_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))
SPLIT_A = [DATA / "lesjak-ms-mni" / "patient07" / "T1.nii.gz", DATA / "tcga-lgg-brainles" / "TCGA-DU-7294" / "t1.nii.gz"]
SPLIT_B = [DATA / "lesjak-ms-mni" / "patient19" / "T2.nii.gz", DATA / "tcga-lgg-brainles" / "TCGA-FG-6692" / "t2.nii.gz"]
SHAPES = {2: (4, 1, 128, 128), 3: (1, 1, 48, 48, 48)}


def peak_rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bare_step(method, device: torch.device, shape: tuple[int, ...], steps: int, warmup: int = 1) -> tuple[float, float]:
    """Median seconds per training step on one random batch of ``shape`` already on ``device``, and peak memory (MB:
    CUDA allocations, or the process's resident set on CPU)."""
    batch = {"a": (torch.rand(shape) * 2 - 1).to(device), "b": (torch.rand(shape) * 2 - 1).to(device)}
    for _ in range(warmup):
        method.training_step(batch)
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        method.training_step(batch)
        _sync(device)
        times.append(time.perf_counter() - start)
    memory = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else peak_rss_mb()
    return statistics.median(times), memory


def step_child(cfg: dict) -> dict:
    from medtrans.methods import build_method
    from medtrans.utils import seed_everything

    seed_everything(0)
    device = torch.device(cfg["device"])
    method = build_method(cfg["method"], spatial_dims=cfg["dims"], precision=cfg["precision"]).setup(
        device, batch_voxels=int(torch.tensor(SHAPES[cfg["dims"]]).prod()))
    seconds, memory = bare_step(method, device, SHAPES[cfg["dims"]], cfg["steps"])
    return {"s_per_it": seconds, "memory_mb": memory, "amp": method.amp}


def stream_child(cfg: dict) -> dict:
    """Load time and batches/s of the TrainStream of whichever medtrans is importable (this or a reference checkout)."""
    import medtrans

    try:
        from medtrans.data import TrainStream
    except ImportError:  # checkouts before the in-memory stream kept it in the engine
        from medtrans.engine import TrainStream
    from medtrans.data import ImageRecord

    records = [[ImageRecord(p.parent.name, p) for p in paths] for paths in (SPLIT_A, SPLIT_B)]
    patch = {"patch_size": [48, 48, 48], "sampler_type": "foreground", "num_workers": cfg["workers"]}
    if cfg.get("prefetch") is not None:
        patch["prefetch"] = cfg["prefetch"]
    start = time.perf_counter()
    stream = TrainStream(*records, patch, batch_size=1, seed=0)
    next(stream)
    loaded = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(cfg["batches"]):
        next(stream)
    rate = cfg["batches"] / (time.perf_counter() - start)
    return {"load_s": loaded, "batches_per_s": rate, "medtrans": str(Path(medtrans.__file__).parents[1])}


def _child(kind: str, cfg: dict, pythonpath: str | None = None) -> dict:
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    done = subprocess.run([sys.executable, __file__, "--child", json.dumps({"kind": kind, **cfg})], capture_output=True,
                          encoding="utf-8", env=env)
    if done.returncode:
        raise RuntimeError(done.stderr.strip().splitlines()[-1][:200])
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_steps(args: argparse.Namespace) -> None:
    print(f"# training-step speed: torch {torch.__version__}, device {args.device}, {torch.get_num_threads()} threads, "
          f"median of {args.steps} steps after one warm-up; 2D 128² batch 4, 3D 48³ batch 1")
    print("| method | dims | precision | s/it | it/s | peak memory MB |")
    print("|---|---|---|---|---|---|")
    for name in args.methods:
        for dims in args.dims:
            for precision in args.precisions:
                cfg = {"method": name, "dims": dims, "precision": precision, "steps": args.steps, "device": args.device}
                try:
                    r = _child("step", cfg)
                except RuntimeError as err:
                    print(f"| {name} | {dims}D | {precision} | failed: {err} | | |", flush=True)
                    continue
                shown = precision if r["amp"] == precision else f"{precision} ({r['amp']})"
                print(f"| {name} | {dims}D | {shown} | {r['s_per_it']:.3f} | {1 / r['s_per_it']:.2f} | "
                      f"{r['memory_mb']:.0f} |", flush=True)


def run_stream(args: argparse.Namespace) -> None:
    print(f"# TrainStream alone: real T1→T2 split (2 + 2 volumes), 48³ patches, batch 1, foreground sampling, "
          f"{args.batches} batches after the first; {os.cpu_count()} CPUs, torch {torch.__version__}")
    print("| medtrans | workers | prefetch | load s | batches/s |")
    print("|---|---|---|---|---|")
    checkouts = [(None, "this checkout")]
    if args.reference_checkout:
        checkouts.append((str(args.reference_checkout), f"reference {args.reference_checkout}"))
    rates = {}
    for path, name in checkouts:
        for workers in (0, 2):
            for prefetch in ((0, 8) if path is None else (None,)):
                r = _child("stream", {"workers": workers, "prefetch": prefetch, "batches": args.batches}, path)
                rates[(name, workers, prefetch)] = r["batches_per_s"]
                print(f"| {name} | {workers} | {'–' if prefetch is None else prefetch} | {r['load_s']:.1f} | "
                      f"{r['batches_per_s']:.1f} |", flush=True)
    if args.reference_checkout:
        for workers in (0, 2):
            ratio = rates[("this checkout", workers, 8)] / rates[(f"reference {args.reference_checkout}", workers, None)]
            print(f"speed-up with {workers} workers: {ratio:.1f}x")


def run_engine(args: argparse.Namespace) -> None:
    import tempfile

    from ignite.engine import Events

    from medtrans.data import ImageRecord, TrainStream
    from medtrans.engine import TranslationTrainer
    from medtrans.methods import build_method
    from medtrans.utils import seed_everything

    device = torch.device(args.device)
    records = [[ImageRecord(p.parent.name, p) for p in paths] for paths in (SPLIT_A, SPLIT_B)]
    print(f"# engine vs bare step: 3D 48³ batch 1, real T1→T2 split, device {args.device}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; {args.iterations} iterations after {args.warmup} warm-up")
    print("| method | precision | bare step it/s | engine it/s | engine / bare (median of repeats) |")
    print("|---|---|---|---|---|")
    for name in args.methods:
        rates = []
        for _ in range(args.repeats):
            seed_everything(0)
            method = build_method(name, spatial_dims=3, precision=args.precision)
            stream = TrainStream(*records, {"patch_size": [48, 48, 48], "sampler_type": "foreground"}, batch_size=1, seed=0)
            with tempfile.TemporaryDirectory() as tmp:
                trainer = TranslationTrainer(method, stream, tmp, iterations=args.warmup + args.iterations,
                                             device=args.device, resume=False, tracking="none", progress=False,
                                             log_interval=10**6, checkpoint_interval=10**6)
                marks: dict[str, float] = {}
                trainer.add_event_handler(Events.ITERATION_COMPLETED(once=args.warmup), lambda _, marks=marks: (
                    _sync(device), marks.setdefault("start", time.perf_counter())))
                trainer.run()
                _sync(device)
                engine_rate = args.iterations / (time.perf_counter() - marks["start"])
            seconds, _ = bare_step(method, device, SHAPES[3], args.iterations, warmup=args.warmup)
            rates.append((engine_rate, 1 / seconds))
        engine_rate, bare_rate = statistics.median(r[0] for r in rates), statistics.median(r[1] for r in rates)
        ratio = statistics.median(e / b for e, b in rates)
        print(f"| {name} | {method.amp} | {bare_rate:.2f} | {engine_rate:.2f} | {ratio:.0%} "
              f"({', '.join(f'{e / b:.0%}' for e, b in rates)}) |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", nargs="+", default=None)
    parser.add_argument("--dims", nargs="+", type=int, default=[2, 3])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--precision", default="auto", help="--engine: the methods' precision")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("--reference-checkout", type=Path)
    parser.add_argument("--batches", type=int, default=400)
    parser.add_argument("--engine", action="store_true")
    parser.add_argument("--iterations", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3, help="--engine: alternations of engine and bare step")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        cfg = json.loads(args.child)
        print(json.dumps({"step": step_child, "stream": stream_child}[cfg.pop("kind")](cfg)))
        return
    if args.stream:
        run_stream(args)
    elif args.engine:
        args.methods = args.methods or ["nec", "cyclegan"]
        run_engine(args)
    else:
        from medtrans.registry import method_names

        args.methods = args.methods or method_names()
        run_steps(args)


if __name__ == "__main__":
    main()
