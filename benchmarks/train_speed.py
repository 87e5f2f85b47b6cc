"""Training-step speed and memory of every method (run on demand, not a test).

    python benchmarks/train_speed.py [--methods nec cyclegan ...] [--steps 3] [--device cpu|cuda]

Each configuration — method × {2D: 128², batch 4; 3D: 48³, batch 1} × {fp32, bf16} — runs in a fresh subprocess:
one warm-up step, then ``--steps`` timed training steps (forward, backward and optimiser steps of every network) on
random batches in [-1, 1], so the figures are the method's own cost without data loading. Networks are the bundles'
defaults (32-wide generators, 6 residual blocks; U-Net 32-64-128-256; 32-wide PatchGANs). Prints iterations/s and the
peak memory: resident set (VmHWM) on CPU, ``torch.cuda.max_memory_allocated`` on CUDA.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import torch

from medtrans.methods import build_method, method_names
from medtrans.utils import seed_everything

RESNET = {"channels": 32, "num_res_blocks": 6}
UNET = {"channels": [32, 64, 128, 256], "strides": [2, 2, 2]}
PATCHGAN = {"channels": 32, "num_layers": 3}
MULTI = {"channels": 32, "num_layers": 3, "num_scales": 2}
CONFIGS = {
    "pix2pix": {"generator": UNET, "discriminator": PATCHGAN},
    "cyclegan": {"generator": RESNET, "discriminator": PATCHGAN},
    "cycle_medgan": {"generator": RESNET, "discriminator": PATCHGAN},
    "cut": {"generator": RESNET, "discriminator": PATCHGAN},
    "nec": {"generator": UNET, "discriminator": MULTI},
    "sesim": {"generator": RESNET, "discriminator": PATCHGAN},
    "unit": {"generator": {"channels": 32, "num_res_blocks": 4}, "discriminator": MULTI},
}
SHAPES = {2: (4, 1, 128, 128), 3: (1, 1, 48, 48, 48)}


def peak_rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024


def child(cfg: dict) -> dict:
    seed_everything(0)
    device = torch.device(cfg["device"])
    method = build_method(cfg["method"], spatial_dims=cfg["dims"], precision=cfg["precision"], **CONFIGS[cfg["method"]])
    method.setup(device)
    shape = SHAPES[cfg["dims"]]
    batch = {"a": torch.rand(shape) * 2 - 1, "b": torch.rand(shape) * 2 - 1}
    method.training_step(batch)  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(cfg["steps"]):
        t = time.perf_counter()
        method.training_step(batch)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    memory = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else peak_rss_mb()
    return {"s_per_it": statistics.median(times), "memory_mb": memory}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", nargs="+", default=method_names())
    parser.add_argument("--dims", nargs="+", type=int, default=[2, 3])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    print(f"# training-step speed: torch {torch.__version__}, device {args.device}, {torch.get_num_threads()} threads, "
          f"median of {args.steps} steps after one warm-up; 2D 128² batch 4, 3D 48³ batch 1")
    print("| method | dims | precision | s/it | it/s | peak memory MB |")
    print("|---|---|---|---|---|---|")
    for name in args.methods:
        for dims in args.dims:
            for precision in args.precisions:
                cfg = {"method": name, "dims": dims, "precision": precision, "steps": args.steps, "device": args.device}
                done = subprocess.run([sys.executable, __file__, "--child", json.dumps(cfg)], capture_output=True, text=True)
                if done.returncode:
                    print(f"| {name} | {dims}D | {precision} | failed: {done.stderr.strip().splitlines()[-1][:80]} | | |", flush=True)
                    continue
                r = json.loads(done.stdout.strip().splitlines()[-1])
                print(f"| {name} | {dims}D | {precision} | {r['s_per_it']:.2f} | {1 / r['s_per_it']:.2f} | {r['memory_mb']:.0f} |",
                      flush=True)


if __name__ == "__main__":
    main()
