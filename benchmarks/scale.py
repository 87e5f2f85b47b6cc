"""Training sets larger than memory: the on-disk cache at 100, 200 and 400 volumes per domain (run on demand).

    python benchmarks/scale.py --root /big/disk/folder [--volumes 100 200 400] [--memory-gb 2] [--out FILE.md]

The volumes are the project's synthetic brains at 1 mm (:func:`medtrans.datasets.make_synthetic_brains`, 197×233×189,
34 MB as float32): ``--distinct`` subjects per domain are generated, written as ``.nii``, and hard-linked under as
many file names as a set needs (every file name is its own cache entry, read and preprocessed on its own, but the
inputs take the disk space of ``--distinct`` volumes). The set grows 100 → 200 → 400 in one cache, so each step builds
only its new entries. At 400 volumes per domain the cache holds 800 entries (about 32 GB) and ``--memory-gb 2`` is
far below what the set needs in memory, so ``storage="auto"`` puts it on disk.

Measured, per size: the time to build the new entries; in a fresh process, the time from ``TrainStream(...)`` to the
first batch once every entry exists, 64³ patches per second, and the process's peak resident memory (``VmHWM``)
against the budget. The in-memory reference is a stream over the ``--distinct`` volumes held in memory; its rate and
the disk stream's are measured in the same process, alternately, batch size 1 (the 3D default), foreground sampler,
both made by ``--workers`` threads ``--prefetch`` batches ahead, as training on a GPU takes them (``--prefetch 0``:
each batch cut when asked, in the consumer's thread).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from medtrans.data import ImageRecord, TrainStream
from medtrans.data.blocks import BlockArray
from medtrans.datasets import make_synthetic_brains

PATCH = (64, 64, 64)


def _rss_peak_gib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def make_pool(root: Path, distinct: int) -> dict[str, list[Path]]:
    """``distinct`` synthetic 1 mm T1w (A) and T2w (B) volumes as ``.nii`` under ``root/pool``."""
    pool = root / "pool"
    if not (pool / "complete").exists():
        make_synthetic_brains(root / "generated", num_a=distinct, num_b=distinct, num_test=0, voxel_mm=1.0)
        for domain in ("A", "B"):
            (pool / domain).mkdir(parents=True, exist_ok=True)
            for path in sorted((root / "generated" / domain).glob("*.nii.gz")):
                image = nib.load(path)
                nib.save(nib.Nifti1Image(np.asarray(image.dataobj), image.affine, image.header),
                         pool / domain / path.name.replace(".nii.gz", ".nii"))
        (pool / "complete").touch()
    return {d: sorted((pool / d).glob("*.nii")) for d in ("A", "B")}


def make_set(root: Path, pool: dict[str, list[Path]], volumes: int) -> dict[str, Path]:
    """Folders ``root/set/{A,B}`` holding ``volumes`` hard links each (the first ``volumes`` of a fixed list)."""
    folders = {}
    for domain, sources in pool.items():
        folder = root / "set" / domain
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(volumes):
            link = folder / f"s{i:04d}.nii"
            if not link.exists():
                os.link(sources[i % len(sources)], link)
        folders[domain] = folder
    return folders


def stream(folders: dict[str, Path], volumes: int, storage: str, cache: Path, memory_gb: float, workers: int = 1,
           prefetch: int = 0) -> TrainStream:
    """A 64³ stream over the first ``volumes`` files of each folder; ``workers`` threads make ``prefetch`` batches
    ahead (0: each batch cut when asked)."""
    records = {d: [ImageRecord(p.stem, p) for p in sorted(f.glob("*.nii"))[:volumes]] for d, f in folders.items()}
    return TrainStream(records["A"], records["B"], {"patch_size": PATCH, "storage": storage, "cache_dir": cache,
                                                    "memory_gb": memory_gb, "num_workers": workers,
                                                    "prefetch": prefetch})


def _rate(s: TrainStream, batches: int) -> float:
    start = time.perf_counter()
    for _ in range(batches):
        next(s)
    return batches * 2 / (time.perf_counter() - start)  # a batch: one patch per domain


def child(args: argparse.Namespace) -> None:
    """One size, in a fresh process: the time to the first batch and the peak resident memory of the disk stream
    alone, then the patches/s of the disk and the in-memory streams, alternately."""
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    disk = stream({d: args.root / "set" / d for d in ("A", "B")}, args.child, "auto", args.root / "cache",
                  args.memory_gb, args.workers, args.prefetch)
    next(disk)
    first = time.perf_counter() - t0
    if not isinstance(disk.domains["a"][0].images["a"], BlockArray):
        raise SystemExit("the set fits --memory-gb: it was not put on disk")
    for _ in range(args.rounds):
        _rate(disk, args.batches)
    rss = _rss_peak_gib()
    memory = stream({d: args.root / "pool" / d for d in ("A", "B")}, args.distinct, "memory", args.root / "cache", 16.0,
                    args.workers, args.prefetch)
    rates: dict[str, list[float]] = {"disk": [], "memory": []}
    for _ in range(args.rounds):
        for name, s in (("disk", disk), ("memory", memory)):
            rates[name].append(_rate(s, args.batches))
    print(json.dumps({"volumes": args.child, "first_batch_s": first, "rss_disk_gib": rss,
                      "disk_patches_s": float(np.median(rates["disk"])),
                      "memory_patches_s": float(np.median(rates["memory"]))}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, required=True, help="a folder with about 35 GB free")
    parser.add_argument("--volumes", type=int, nargs="+", default=[100, 200, 400])
    parser.add_argument("--distinct", type=int, default=8)
    parser.add_argument("--memory-gb", type=float, default=2.0)
    parser.add_argument("--batches", type=int, default=200, help="batches per timing round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workers", type=int, default=4, help="threads making the batches (both streams)")
    parser.add_argument("--prefetch", type=int, default=8, help="batches made ahead (both streams; 0: none)")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    pool = make_pool(args.root, args.distinct)
    print(f"pool of {args.distinct} subjects per domain: {time.perf_counter() - t0:.0f} s", flush=True)
    rows = []
    for n in sorted(args.volumes):
        folders = make_set(args.root, pool, n)
        t0 = time.perf_counter()
        stream(folders, n, "disk", args.root / "cache", args.memory_gb)  # builds the entries it lacks
        build = time.perf_counter() - t0
        done = subprocess.run([sys.executable, __file__, "--root", str(args.root), "--child", str(n),
                               "--distinct", str(args.distinct), "--memory-gb", str(args.memory_gb),
                               "--batches", str(args.batches), "--rounds", str(args.rounds),
                               "--workers", str(args.workers), "--prefetch", str(args.prefetch)],
                              capture_output=True, encoding="utf-8", check=True)
        row = {**json.loads(done.stdout.strip().splitlines()[-1]), "build_s": build}
        rows.append(row)
        print(json.dumps(row), flush=True)
    cache_gb = sum(f.stat().st_size for f in (args.root / "cache").rglob("*") if f.is_file()) / 1e9
    lines = [f"On-disk cache at scale: {platform.node()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
             f"{datetime.date.today()}; 64³ patches, batch 1, --memory-gb {args.memory_gb:g}, {args.workers} "
             f"loader threads, {args.prefetch} batches ahead; "
             f"cache {cache_gb:.1f} GB at the end", "",
             "| volumes per domain | new entries built in | s per new volume | time to first batch (entries built) "
             "| disk patches/s | memory patches/s | disk / memory | peak RSS (GiB) |",
             "|---|---|---|---|---|---|---|---|"]
    previous = 0
    for row in rows:
        new = 2 * (row["volumes"] - previous)
        previous = row["volumes"]
        lines.append(f"| {row['volumes']} | {row['build_s']:.0f} s | {row['build_s'] / new:.2f} | "
                     f"{row['first_batch_s']:.2f} s | {row['disk_patches_s']:.0f} | {row['memory_patches_s']:.0f} | "
                     f"{row['disk_patches_s'] / row['memory_patches_s']:.2f} | {row['rss_disk_gib']:.2f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
