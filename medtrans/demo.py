"""``medtrans demo``: the whole path on an embedded default dataset (or ``--data``) in a few minutes on a CPU.

data (synthetic ICBM152-based T1w/T2w, or DIR/{A,B,test/A,test/B[,test/mask]}) → train NEC on axial slices for a time
budget → translate the held-out T1w volumes whole → score them against their real T2w next to two baselines that need
no training → NIfTI outputs, faithfulness maps, scores CSV and a montage PNG.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import pandas as pd

from medtrans.data.intensity import foreground_mask
from medtrans.errors import InputError
from medtrans.evaluate import histogram_baselines, pooled_foreground
from medtrans.io import atomic_write, is_nifti, read_volume, write_volume
from medtrans.visualize import volume_montage

__all__ = ["register", "run_demo"]

# λ_NGF = 10: on the embedded data it gave 15.7 dB / SSIM 0.67 after 3 min against 15.2 / 0.65 with the default 1
NEC_2D = {"generator": {"channels": [32, 64, 128, 256], "strides": [2, 2, 2]},
          "discriminator": {"channels": 32, "num_layers": 3, "num_scales": 2}, "lambda_ngf": 10.0}


def _say(text: str) -> None:
    print(f"[medtrans demo] {text}", flush=True)


def _check_layout(data: Path) -> None:
    for folder in ("A", "B", "test/A", "test/B"):
        if not (data / folder).is_dir():
            raise InputError(data / folder, "missing: --data needs A/, B/ (training) and test/A/, test/B/ (paired test)")


def _baselines(data: Path, out: Path) -> dict[str, Path]:
    """Write :func:`~medtrans.evaluate.histogram_baselines` of every test input against the pooled training targets."""
    pooled = pooled_foreground([p for p in sorted((data / "B").iterdir()) if is_nifti(p)])
    folders = {"histogram-matched input": out / "histmatch", "inverted + histogram-matched input": out / "inverted_histmatch"}
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    for path in sorted(p for p in (data / "test" / "A").iterdir() if is_nifti(p)):
        volume = read_volume(path)
        for name, prediction in histogram_baselines(volume.data, foreground_mask(volume.data), pooled).items():
            write_volume(folders[name] / path.name, prediction, volume)
    return folders


def run_demo(output: str | Path = "demo_output", data: str | Path | None = None, minutes: float = 4.0, seed: int = 0,
             device: str = "auto", progress: bool = True) -> pd.DataFrame:
    """Run the demo; returns the score table (one row per method and test subject)."""
    from ignite.engine import Events
    from ignite.handlers import TimeLimit

    from medtrans.datasets import make_synthetic_brains
    from medtrans.engine import TrainStream, TranslationTrainer
    from medtrans.evaluate import evaluate_paths
    from medtrans.inference import translate_path
    from medtrans.methods import build_method
    from medtrans.utils import seed_everything

    start = time.monotonic()
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

    _say(f"2/5 training NEC on axial slices for {minutes:g} min (A: {data / 'A'}, B: {data / 'B'})")
    logging.basicConfig(level=logging.WARNING)
    seed_everything(seed)
    method = build_method("nec", spatial_dims=2, **NEC_2D)
    shape = next(read_volume(p) for p in sorted((data / "A").iterdir()) if is_nifti(p)).data.shape
    patch = [min(128, s - s % 8) for s in shape[:2]] + [1]
    stream = TrainStream(str(data / "A"), str(data / "B"), {"patch_size": patch, "sampler_type": "foreground",
                         "samples_per_volume": 16, "max_length": 64}, batch_size=4, seed=seed)
    run = output / "run"
    trainer = TranslationTrainer(method, stream, run, max_epochs=10**6, epoch_length=100, device=device, resume=False,
                                 tracking="none", montage_interval=0, progress=progress, log_interval=100)
    trainer.add_event_handler(Events.ITERATION_COMPLETED, TimeLimit(limit_sec=int(minutes * 60)))
    trainer.run()
    generator = trainer.export(output / "generator.pt")
    _say(f"   {trainer.state.iteration} iterations; generator saved to {generator}")

    _say("3/5 translating the held-out T1w volumes whole, with faithfulness maps")
    translated = output / "translated"
    translate_path(data / "test" / "A", translated, generator, faithfulness_map=output / "faithfulness", progress=False)

    _say("4/5 scoring against the held-out real T2w, beside two baselines that need no training")
    mask = data / "test" / "mask" if (data / "test" / "mask").is_dir() else None
    predictions = {"NEC (medtrans demo)": translated, **_baselines(data, output / "baselines")}
    rows = []
    for name, folder in predictions.items():
        table = evaluate_paths(folder, data / "test" / "B", mask)
        table.insert(0, "method", name)
        rows.append(table)
    scores = pd.concat(rows, ignore_index=True)
    atomic_write(output / "scores.csv", lambda tmp: scores.to_csv(tmp, index=False))
    summary = scores.groupby("method", sort=False)[["psnr", "ssim3d", "ssim2d", "mae"]].mean()
    with pd.option_context("display.float_format", "{:.3f}".format, "display.width", 120):
        print(summary.to_string())
    print("(brain mask; both volumes scaled by the target's 1st-99th brain percentiles to [0, 1], data range 1)")

    _say("5/5 writing the montage")
    first = sorted(p for p in translated.iterdir() if is_nifti(p))[0]
    volume_montage(data / "test" / "A" / first.name, first, data / "test" / "B" / first.name,
                   output / "faithfulness" / first.name.replace(".nii", "_invented.nii"), output / "montage.png")
    _say(f"done in {(time.monotonic() - start) / 60:.1f} min: {output}/translated, faithfulness/, scores.csv, montage.png "
         "(input | NEC | real T2 | |error| | invented structure)")
    return scores


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``medtrans demo``."""
    p = subparsers.add_parser("demo", help="train, translate and score NEC on the embedded dataset in a few minutes",
                              description=__doc__)
    p.add_argument("--output", type=Path, default=Path("demo_output"))
    p.add_argument("--data", type=Path, help="use DIR/{A,B,test/A,test/B[,test/mask]} instead of the embedded dataset")
    p.add_argument("--minutes", type=float, default=4.0, help="training budget")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=lambda a: run_demo(a.output, a.data, a.minutes, a.seed, a.device, not a.no_progress) is not None and 0)
