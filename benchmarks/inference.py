"""Whole-volume inference benchmark: time, throughput, memory and stitching overhead (run on demand, not a test).

    python benchmarks/inference.py [--channels 16 --blocks 3 --roi 64 --overlap 0.25 --precision fp32]

Translates a 182×218×182 volume (lesjak-ms-mni patient07 T1 when ../shared/data has it, else a synthetic volume of
that shape) with a randomly initialised 3D and 2D ResnetGenerator, each configuration in a fresh subprocess so its
peak RSS is its own, and prints:

- seconds (network pass only, and the whole file-to-file translation), voxels/s;
- overlap factor: voxels pushed through the network ÷ volume voxels;
- ratio to the ideal: measured network seconds ÷ (number of windows × median seconds of one window's forward pass),
  i.e. what stitching, padding and Gaussian blending cost on top of the forward passes themselves;
- memory: the RSS gain over the process's resting RSS during the network pass (input tensor already allocated) and
  during a whole file-to-file translation, from /proc VmHWM reset per phase;
- a one-pass run (ROI larger than the volume) and a windowed run on a larger volume, to show that windowed memory does
  not grow with the volume beyond the volume-sized buffers (input, output, blend weights).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.inferers.utils import _get_scan_interval, dense_patch_slices

from medtrans.inference import InferenceSettings, Translator
from medtrans.model import TranslationModel
from medtrans.networks.registry import build_network

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "lesjak-ms-mni" / "patient07" / "T1.nii.gz"


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    """Peak RSS of this address space (VmHWM). Unlike getrusage's ru_maxrss, it is not inherited across exec."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024


def reset_peak() -> None:
    """Restart VmHWM from the current RSS (Linux >= 4.0), so each phase's peak is its own."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def make_volume(path: Path, shape: tuple[int, int, int]) -> None:
    if REAL.exists() and shape == (182, 218, 182):
        image = nib.load(REAL)
        nib.save(nib.Nifti1Image(np.asarray(image.dataobj, dtype=np.float32), image.affine), path)
        return
    rng = np.random.default_rng(0)
    zz, yy, xx = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    data = np.where(zz**2 + yy**2 + xx**2 < 0.8, 500 + 200 * np.sin(8 * xx) * np.cos(6 * yy) + rng.normal(0, 20, shape), 0)
    nib.save(nib.Nifti1Image(data.astype(np.float32), np.diag([1.0, 1.0, 1.0, 1.0])), path)


def windows(shape, roi, overlap) -> int:
    roi = tuple(min(r, s) for r, s in zip(roi, shape))
    return len(dense_patch_slices(shape, roi, _get_scan_interval(shape, roi, 3, (overlap,) * 3)))


def child(cfg: dict) -> dict:
    torch.set_num_threads(cfg["threads"])
    torch.manual_seed(0)
    dims = cfg["dims"]
    net_def = {"_target_": "medtrans.networks.ResnetGenerator", "spatial_dims": dims, "channels": cfg["channels"],
               "num_res_blocks": cfg["blocks"]}
    model = TranslationModel(build_network(net_def).eval(), net_def, dims)
    settings = InferenceSettings(roi_size=(cfg["roi"],) * 3, overlap=cfg["overlap"], batch_size=cfg["batch"],
                                 precision=cfg["precision"], progress=False, device="cpu")
    translator = Translator(model, settings)
    vol = Path(cfg["volume"])
    shape = nib.load(vol).shape
    x = torch.rand(1, 1, *shape) * 2 - 1
    # ideal: the same number of full forward passes, without stitching
    if dims == 3:
        n = windows(shape, settings.roi_size, settings.overlap)
        win = tuple(min(r, s) + (-min(r, s)) % 4 for r, s in zip(settings.roi_size, shape))
        probe = torch.rand(1, 1, *win)
    else:
        n = -(-shape[2] // settings.batch_size)
        probe = torch.rand(settings.batch_size, 1, *(s + (-s) % 4 for s in shape[:2]))
    with torch.inference_mode():
        translator._forward(probe)  # warm-up
        times = []
        for _ in range(cfg["repeats"]):
            t = time.perf_counter()
            translator._forward(probe)
            times.append(time.perf_counter() - t)
    t_window = statistics.median(times)
    base = rss_mb()
    reset_peak()
    t = time.perf_counter()
    translator.run_network(x)
    net_s = time.perf_counter() - t
    peak_network = peak_rss_mb()
    del x
    reset_peak()
    base_file = rss_mb()
    t = time.perf_counter()
    translator.translate_file(vol, Path(cfg["out"]))
    file_s = time.perf_counter() - t
    pushed = n * probe[0].numel() * probe.shape[0] if dims == 3 else np.prod(probe.shape[2:]) * shape[2]
    return {
        "label": cfg["label"],
        "shape": "×".join(map(str, shape)),
        "windows": n,
        "network_s": round(net_s, 2),
        "file_to_file_s": round(file_s, 2),
        "mvoxels_per_s": round(np.prod(shape) / net_s / 1e6, 3),
        "overlap_factor": round(float(pushed) / np.prod(shape), 2),
        "ideal_s": round(n * t_window, 2),
        "ratio_to_ideal": round(net_s / (n * t_window), 3),
        "network_rss_gain_mb": round(peak_network - base),
        "file_to_file_rss_gain_mb": round(peak_rss_mb() - base_file),
        "volume_mb": round(np.prod(shape) * 4 / 2**20),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--blocks", type=int, default=3)
    parser.add_argument("--roi", type=int, default=64)
    parser.add_argument("--overlap", type=float, default=0.25)
    parser.add_argument("--batch", type=int, default=16, help="2D slices per pass")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--large", type=int, nargs=3, default=(256, 256, 256), help="second volume for the memory check")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    with tempfile.TemporaryDirectory() as tmp:
        small, large = Path(tmp) / "small.nii.gz", Path(tmp) / "large.nii.gz"
        make_volume(small, (182, 218, 182))
        make_volume(large, tuple(args.large))
        common = {k: getattr(args, k) for k in ("channels", "blocks", "overlap", "batch", "precision", "repeats", "threads")}
        runs = [
            {"label": "3D windowed", "dims": 3, "roi": args.roi, "volume": str(small)},
            {"label": "3D windowed, large", "dims": 3, "roi": args.roi, "volume": str(large)},
            {"label": "3D one pass", "dims": 3, "roi": 1024, "volume": str(small)},
            {"label": "2D slice-wise", "dims": 2, "roi": args.roi, "volume": str(small)},
        ]
        print(f"# inference benchmark: ResnetGenerator channels={args.channels} blocks={args.blocks}, roi {args.roi}³, "
              f"overlap {args.overlap}, {args.precision}, {args.threads} threads, torch {torch.__version__}, "
              f"volume {'lesjak-ms-mni patient07 T1' if REAL.exists() else 'synthetic'}")
        keys = None
        for run in runs:
            cfg = {**common, **run, "out": str(Path(tmp) / "out.nii.gz")}
            done = subprocess.run([sys.executable, __file__, "--child", json.dumps(cfg)], capture_output=True, encoding="utf-8")
            if done.returncode:
                print(done.stderr[-2000:], file=sys.stderr)
                sys.exit(done.returncode)
            row = json.loads(done.stdout.strip().splitlines()[-1])
            if keys is None:
                keys = list(row)
                print("| " + " | ".join(keys) + " |")
                print("|" + "---|" * len(keys))
            print("| " + " | ".join(str(row[k]) for k in keys) + " |", flush=True)


if __name__ == "__main__":
    main()
