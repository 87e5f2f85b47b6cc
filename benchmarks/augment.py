"""The training stream's speed with torchio augmentation against the plain stream, in one run.

    python benchmarks/augment.py [--batches 20] [--rounds 3] [--threads 1]

On the embedded synthetic brains (``medtrans.datasets.make_synthetic_brains``: 98×116×94, 2 mm; two subjects per
domain), with the defaults' patches and batches (3D: 64³, batch 1; 2D: 128² axial slices, batch 4), foreground
sampling and no prefetch thread (``stream.batch(i)`` timed in this thread, which is the prefetch thread's own work).
Each recipe is timed against the plain stream in alternating rounds (a shared machine drifts); the table gives
batches per second (the median over rounds), the ratio augmented / plain, and the mean number of voxels each patch's
transform worked on, as a multiple of the patch (the margin; :mod:`medtrans.data.augment`).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torchio as tio

import medtrans.data.augment as augment_module
from medtrans import defaults
from medtrans.data import TrainStream
from medtrans.datasets import make_synthetic_brains

RECIPES = {
    "typical": lambda: [tio.RandomAffine(scales=0.1, degrees=10, translation=4), tio.RandomBiasField(coefficients=0.3),
                        tio.RandomGamma(log_gamma=0.3), tio.RandomMotion(degrees=5, translation=5, p=0.2)],
    "intensity only": lambda: [tio.RandomBiasField(coefficients=0.3), tio.RandomGamma(log_gamma=0.3),
                               tio.RandomNoise(std=(0, 0.02))],
    "RandomAffine": lambda: [tio.RandomAffine(scales=0.1, degrees=10, translation=4)],
    "RandomElasticDeformation": lambda: [tio.RandomElasticDeformation(num_control_points=5, max_displacement=4)],
    "RandomMotion": lambda: [tio.RandomMotion(degrees=5, translation=5)],
}
"""The documented recipe first (docs/training.md#augmentation), then its parts."""


def batches_per_second(stream: TrainStream, start: int, count: int) -> float:
    began = time.perf_counter()
    for index in range(start, start + count):
        stream.batch(index)
    return count / (time.perf_counter() - began)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=20, help="batches per timing")
    parser.add_argument("--rounds", type=int, default=3, help="alternating plain/augmented rounds per recipe")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the prefetch thread shares the cores)")
    parser.add_argument("--dims", type=int, nargs="+", default=[3, 2], choices=(2, 3))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    voxels: list[float] = []
    cut = augment_module._cut

    def counting_cut(image, region, margin):  # records how much each transform worked on
        out = cut(image, region, margin)
        voxels.append(out.numel() / np.prod([s.stop - s.start for s in region]))
        return out

    augment_module._cut = counting_cut
    print(f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch thread(s), torch "
          f"{torch.__version__}, torchio {tio.__version__}; {args.batches} batches x {args.rounds} rounds\n")
    print("| patches | recipe | plain batches/s | augmented batches/s | ratio | voxels transformed / patch |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        data = make_synthetic_brains(Path(tmp), num_a=2, num_b=2, num_test=1, seed=0)
        for dims in args.dims:
            patch = {"patch_size": defaults.PATCH_SIZE[dims], "num_workers": 0, "prefetch": 0}
            size = "x".join(str(s) for s in defaults.PATCH_SIZE[dims] if s > 1)
            label = f"{size}, batch {defaults.BATCH_SIZE[dims]}"
            plain = TrainStream(data / "A", data / "B", patch, batch_size=defaults.BATCH_SIZE[dims])
            for name, recipe in RECIPES.items():
                augmented = TrainStream(data / "A", data / "B", patch, batch_size=defaults.BATCH_SIZE[dims],
                                        transform_a=recipe(), transform_b=recipe())
                augmented.batch(0)
                voxels.clear()
                rates: dict[str, list[float]] = {"plain": [], "augmented": []}
                for r in range(args.rounds):
                    rates["plain"].append(batches_per_second(plain, r * args.batches, args.batches))
                    rates["augmented"].append(batches_per_second(augmented, r * args.batches, args.batches))
                ratios = [a / p for a, p in zip(rates["augmented"], rates["plain"])]
                print(f"| {label} | {name} | {statistics.median(rates['plain']):.0f} | "
                      f"{statistics.median(rates['augmented']):.1f} | {statistics.median(ratios):.3f} | "
                      f"{np.mean(voxels):.2f} |", flush=True)


if __name__ == "__main__":
    main()
