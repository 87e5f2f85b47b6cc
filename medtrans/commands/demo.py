"""``medtrans demo``: the whole path on an embedded default dataset (or ``--data``) in about six minutes on 2 CPU cores.

data (synthetic ICBM152-based T1w/T2w, or DIR/{A,B,test/A,test/B[,test/mask]}) → train NEC on axial slices for a fixed
number of iterations → translate the held-out T1w volumes whole → score them against their real T2w next to two
baselines that need no training → NIfTI outputs, faithfulness maps and reports, scores CSV and a labelled montage PNG.

The budget is a number of iterations, not minutes, and the thread count depends on the machine's cores, not on its
load: a busy machine gives the same result, later. The demo says how long it expects to take, measures its speed early,
and warns when the machine is far slower than the machine it was timed on.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from medtrans import defaults

__all__ = ["REFERENCE_SPEED", "run_demo", "run_demo_command"]

# NEC 2D as the benchmarks' 2D networks, λ_NGF = 10 (on the embedded data it beat λ 1: 15.7 vs 15.2 dB at 3 min)
NEC_2D = {"generator": {"channels": [32, 64, 128, 256], "strides": [2, 2, 2]},
          "discriminator": {"channels": 32, "num_layers": 3, "num_scales": 2}, "lambda_ngf": 10.0}
REFERENCE_SPEED = 6.4
"""Training iterations per second of the demo on the machine its time was measured on (2 cores, docs/results.md)."""
REFERENCE_OTHER_SECONDS = 20.0
"""Time of the demo's other steps (dataset, translation, scoring, montage) on that machine."""
PROGRESS_EVERY = 250
NEC = "NEC (medtrans demo)"
INVERTED = "inverted + histogram-matched input"


def _say(text: str) -> None:
    print(f"[medtrans demo] {text}", flush=True)


def default_threads() -> int:
    """Torch CPU threads for the demo: the cores this process may use, at most 4 — a property of the machine, not of
    how busy it is, so the result does not change with the load."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(4, cores))


def _check_layout(data: Path) -> None:
    from medtrans.errors import InputError

    for folder in ("A", "B", "test/A", "test/B"):
        if not (data / folder).is_dir():
            raise InputError(data / folder, "missing: --data needs A/, B/ (training) and test/A/, test/B/ (paired test)")


def _baselines(data: Path, out: Path) -> dict[str, Path]:
    """Write :func:`~medtrans.evaluate.histogram_baselines` of every test input against the pooled training targets."""
    from medtrans.data.intensity import foreground_mask
    from medtrans.evaluate import histogram_baselines, pooled_foreground
    from medtrans.io import is_nifti, read_volume, write_volume

    pooled = pooled_foreground([p for p in sorted((data / "B").iterdir()) if is_nifti(p)])
    folders = {"histogram-matched input": out / "histmatch", INVERTED: out / "inverted_histmatch"}
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    for path in sorted(p for p in (data / "test" / "A").iterdir() if is_nifti(p)):
        volume = read_volume(path)
        for name, prediction in histogram_baselines(volume.data, foreground_mask(volume.data), pooled).items():
            write_volume(folders[name] / path.name, prediction, volume)
    return folders


class _Speed:
    """Prints the measured speed once, warns when it is far below the reference, and a progress line now and then."""

    def __init__(self, iterations: int, progress: bool) -> None:
        self.iterations = iterations
        self.progress = progress
        self.start = time.perf_counter()
        self.rate: float | None = None

    def __call__(self, engine: Any) -> None:
        i = engine.state.iteration
        elapsed = time.perf_counter() - self.start
        if i == min(50, self.iterations):
            self.rate = i / elapsed
            left = (self.iterations - i) / self.rate
            _say(f"   measured {self.rate:.1f} it/s ({REFERENCE_SPEED:g} on the reference machine): about "
                 f"{left / 60:.1f} min of training left")
            if self.rate < 0.5 * REFERENCE_SPEED:
                _say(f"   WARNING: this machine trains {REFERENCE_SPEED / self.rate:.1f}x slower than the reference "
                     "(busy, or fewer cores?). The result will be the same, only later.")
        elif self.progress and i % PROGRESS_EVERY == 0:
            rate = i / elapsed
            _say(f"   iteration {i}/{self.iterations}, {rate:.1f} it/s, {(self.iterations - i) / rate / 60:.1f} min left")


def run_demo(output: str | Path = "demo_output", data: str | Path | None = None,
             iterations: int = defaults.DEMO_ITERATIONS, seed: int = 0,
             device: str = "auto", progress: bool = True, threads: int | None = None) -> Any:
    """Run the demo; returns the score table (a pandas DataFrame, one row per method and test subject)."""
    import logging

    import pandas as pd
    import torch
    from ignite.engine import Events

    from medtrans.data import TrainStream
    from medtrans.datasets import make_synthetic_brains
    from medtrans.engine import TranslationTrainer
    from medtrans.evaluate import EvaluationProtocol, describe, evaluate_paths
    from medtrans.inference import translate_path
    from medtrans.io import atomic_write, is_nifti, read_volume
    from medtrans.methods import build_method
    from medtrans.utils import seed_everything
    from medtrans.visualize import volume_montage

    start = time.monotonic()
    threads = threads or default_threads()
    torch.set_num_threads(threads)
    expected = iterations / REFERENCE_SPEED + REFERENCE_OTHER_SECONDS
    _say(f"{iterations} training iterations, {threads} threads; about {expected / 60:.1f} min on the reference machine "
         "(2 cores)")
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    if data is None:
        data = output / "data"
        if not (data / "test" / "B").is_dir():
            _say(f"1/5 building the embedded dataset (ICBM152 anatomy, simulated T1w/T2w) in {data}")
            make_synthetic_brains(data, seed=seed)
        else:
            _say(f"1/5 reusing the embedded dataset in {data}")
    data = Path(data)
    _check_layout(data)

    _say(f"2/5 training NEC on axial slices for {iterations} iterations (A: {data / 'A'}, B: {data / 'B'})")
    logging.basicConfig(level=logging.WARNING)
    seed_everything(seed)
    method = build_method("nec", spatial_dims=2, **NEC_2D)
    shape = next(read_volume(p) for p in sorted((data / "A").iterdir()) if is_nifti(p)).data.shape
    patch = [min(128, s - s % 8) for s in shape[:2]] + [1]
    stream = TrainStream(str(data / "A"), str(data / "B"), {"patch_size": patch, "sampler_type": "foreground"},
                         batch_size=4, seed=seed)
    trainer = TranslationTrainer(method, stream, output / "run", iterations=iterations, device=device, resume=False,
                                 tracking="none", progress=progress, log_interval=iterations)
    speed = _Speed(iterations, progress)
    trainer.add_event_handler(Events.STARTED, lambda _: setattr(speed, "start", time.perf_counter()))
    trainer.add_event_handler(Events.ITERATION_COMPLETED, speed)
    trainer.run()
    trained = time.perf_counter() - speed.start
    generator = trainer.export(output / "generator.pt")
    _say(f"   {trainer.state.iteration} iterations in {trained / 60:.1f} min ({trainer.state.iteration / trained:.1f} "
         f"it/s); generator saved to {generator}")

    _say("3/5 translating the held-out T1w volumes whole, with faithfulness maps and reports")
    translated = output / "translated"
    translate_path(data / "test" / "A", translated, generator, faithfulness_map=output / "faithfulness",
                   faithfulness_report=output / "regions", progress=False)

    _say("4/5 scoring against the held-out real T2w, beside two baselines that need no training")
    mask = data / "test" / "mask" if (data / "test" / "mask").is_dir() else None
    predictions = {NEC: translated, **_baselines(data, output / "baselines")}
    rows = []
    for name, folder in predictions.items():
        table = evaluate_paths(folder, data / "test" / "B", mask)
        table.insert(0, "method", name)
        rows.append(table)
    scores = pd.concat(rows, ignore_index=True)
    atomic_write(output / "scores.csv", lambda tmp: scores.to_csv(tmp, index=False))
    summary = scores.groupby("method", sort=False)[["psnr", "ssim3d", "ssim2d", "mae", "texture"]].mean()
    with pd.option_context("display.float_format", "{:.3f}".format, "display.width", 120):
        print(summary.to_string())
    print(f"(protocol: {describe(EvaluationProtocol(), mask is not None)})")

    _say("5/5 writing the montage")
    first = sorted(p for p in translated.iterdir() if is_nifti(p))[0]
    scored = scores[scores.subject == first.name.split(".")[0]].set_index("method")

    def score(method: str) -> str:
        return f"{scored.psnr[method]:.1f} dB, SSIM {scored.ssim3d[method]:.2f}"

    report = output / "regions" / (first.name.split(".nii")[0] + ".json")
    regions = _region_volume(first, report)
    volume_montage(data / "test" / "A" / first.name, first, data / "test" / "B" / first.name, regions,
                   output / "montage.png",
                   labels=(f"input T1w\ninverted: {score(INVERTED)}", f"NEC translation\n{score(NEC)}", "real T2w",
                           "|error|", f"invented/erased regions\n{len(json.loads(report.read_text())['regions'])} "
                           "(faithfulness report)"))
    total = time.monotonic() - start
    _say(f"done in {total / 60:.1f} min (expected {expected / 60:.1f} on the reference machine): {output}/translated, "
         "faithfulness/, regions/, scores.csv, montage.png")
    return scores


def _region_volume(volume: Path, report: Path) -> Path:
    """The faithfulness report's regions drawn as balls of their equivalent radius at their world centres, on the
    translation's grid (``<report stem>_regions.nii.gz`` beside the report): the montage's last panel."""
    import nibabel as nib
    import numpy as np

    from medtrans.io import atomic_write

    image = nib.load(volume)
    spacing = np.linalg.norm(image.affine[:3, :3], axis=0)
    grid = np.indices(image.shape[:3], dtype=np.float32)
    drawn = np.zeros(image.shape[:3], np.float32)
    for region in json.loads(report.read_text())["regions"]:
        centre = np.linalg.inv(image.affine) @ [region["centre_x"], region["centre_y"], region["centre_z"], 1.0]
        distance = np.sqrt(sum(((grid[i] - centre[i]) * spacing[i]) ** 2 for i in range(3)))
        drawn[distance <= region["radius_mm"]] = 1.0
    path = report.with_name(report.name[: -len(".json")] + "_regions.nii.gz")
    return atomic_write(path, lambda tmp: nib.save(nib.Nifti1Image(drawn, image.affine), tmp))


def run_demo_command(args: argparse.Namespace) -> int:
    """Body of ``medtrans demo``. OpenMP threads spin only briefly before they sleep (``GOMP_SPINCOUNT=1000``, set
    before torch loads, unless OpenMP's wait settings are already given): on our 2-core machine this kept 98 % of the
    idle speed (7.3 vs 7.5 it/s) and made a machine with one busy process per core 1.7× faster than the default
    spinning (2.9 vs 1.7 it/s); passive waiting was faster under load (3.7) but 22 % slower idle."""
    from medtrans.io import check_outputs
    from medtrans.utils import resolve_device

    resolve_device(args.device)  # a CUDA device torch does not see: refused before the dataset is built
    out = args.output
    check_outputs([(out, "--output"), *((out / name, "--output") for name in ("generator.pt", "scores.csv", "montage.png"))],
                  [(args.data, "--data")],
                  folders=[(out / name, "--output") for name in ("run", "translated", "faithfulness", "regions",
                                                                  "baselines")])
    if "OMP_WAIT_POLICY" not in os.environ:
        os.environ.setdefault("GOMP_SPINCOUNT", "1000")
    run_demo(args.output, args.data, args.iterations, args.seed, args.device, not args.no_progress, args.threads)
    return 0
