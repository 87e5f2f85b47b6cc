"""Real-data translation quality: every method, 2D and 3D, one budget, beside training-free baselines.

    python benchmarks/quality.py [--task t1-t2 t1c-flair] [--methods ...] [--dims 2 3] [--minutes 10] [--all-folds]
                                  [--threads N] [--set KEY=VALUE ...]

Tasks (../shared/data):
- ``t1-t2``: lesjak-ms-mni (3 MS patients) + tcga-lgg-brainles (2 glioma patients), T1 → T2.
- ``t1c-flair``: brats2015-deepmedic (4 glioma patients), T1c → FLAIR.

Split: one test subject is left out (default lesjak patient26, as ../shared/notes/baselines.md; brats pat0006); with
``--all-folds`` every subject is left out in turn. The remaining subjects, sorted, alternate between two disjoint
halves — T1 (or T1c) volumes from the first, T2 (FLAIR) volumes from the second, so both halves mix the datasets and
training is truly unpaired; pix2pix, the paired baseline, trains on both contrasts of all training subjects. Every method trains for the same wall-clock budget on
this machine with the same seed, through medtrans's own engine (bundle-default networks; 2D: 128² axial slices, batch
4; 3D: 48³ patches, batch 1; foreground sampling), then translates the test volume whole.

Baselines without training: the rescaled input; the input histogram-matched to the pooled training targets; the
contrast-inverted input histogram-matched the same way.

Scores: ``medtrans.evaluate`` inside the brain mask with per-volume normalisation (each volume's 1st–99th brain
percentiles to [0, 1], data range 1 — the datasets' raw intensity scales differ, so scaling by the target's percentiles
would score the scale, not the translation) and with the NEC protocol (histogram matching, σ = 0.5 mm, per-volume
percentiles). Writes ``<out>/results.csv``, ``<out>/results.md`` (table with split, budget, seed, commit, machine) and
one montage PNG per method and fold (input | output | target | |error| | invented structure).
"""

from __future__ import annotations

import argparse
import datetime
import platform
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from medtrans.data import ImageRecord
from medtrans.data.intensity import fit_intensity, foreground_mask
from medtrans.engine import TrainStream, TranslationTrainer
from medtrans.engine.command import parse_assignments
from medtrans.evaluate import (
    EvaluationProtocol,
    evaluate_pair,
    histogram_baselines,
    pooled_foreground,
)
from medtrans.inference import InferenceSettings, Translator
from medtrans.io import Volume, read_volume, write_volume
from medtrans.methods import build_method, method_names
from medtrans.utils import seed_everything
from medtrans.visualize import volume_montage

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
LESJAK = {f"lesjak-{p}": (DATA / "lesjak-ms-mni" / p / "T1.nii.gz", DATA / "lesjak-ms-mni" / p / "T2.nii.gz", None)
          for p in ("patient07", "patient19", "patient26")}
TCGA = {f"tcga-{s}": (DATA / "tcga-lgg-brainles" / s / "t1.nii.gz", DATA / "tcga-lgg-brainles" / s / "t2.nii.gz",
                      DATA / "tcga-lgg-brainles" / s / "brainmask.nii.gz") for s in ("TCGA-DU-7294", "TCGA-FG-6692")}
BRATS = {f"brats-{s}": (DATA / "brats2015-deepmedic" / s / "t1c.nii.gz", DATA / "brats2015-deepmedic" / s / "flair.nii.gz",
                        DATA / "brats2015-deepmedic" / s / "brainmask.nii.gz")
         for s in ("brats_2013_pat0003_1", "brats_2013_pat0004_1", "brats_2013_pat0005_1", "brats_2013_pat0006_1")}
TASKS = {"t1-t2": ({**LESJAK, **TCGA}, "lesjak-patient26"), "t1c-flair": (BRATS, "brats-brats_2013_pat0006_1")}
NETS = {  # bundle defaults
    "pix2pix": {"generator": {"channels": [32, 64, 128, 256], "strides": [2, 2, 2]}, "discriminator": {"channels": 32}},
    "nec": {"generator": {"channels": [32, 64, 128, 256], "strides": [2, 2, 2]},
            "discriminator": {"channels": 32, "num_layers": 3, "num_scales": 2}},
    "unit": {"generator": {"channels": 32, "num_res_blocks": 4}, "discriminator": {"channels": 32, "num_layers": 3, "num_scales": 2}},
}
RESNET = {"generator": {"channels": 32, "num_res_blocks": 6}, "discriminator": {"channels": 32}}


def brain_mask(volume: Volume, mask_path: Path | None) -> np.ndarray:
    if mask_path is not None:
        return read_volume(mask_path, allow_constant=True).data > 0.5
    return foreground_mask(volume.data)


def baselines(test_a: Volume, mask: np.ndarray, targets: list[Path]) -> dict[str, np.ndarray]:
    rescaled = fit_intensity({"type": "percentile"}, test_a.data, mask).forward(test_a.data)
    matched = histogram_baselines(test_a.data, mask, pooled_foreground(targets))
    return {"baseline: rescaled input": rescaled, **{f"baseline: {k}": v for k, v in matched.items()}}


def train_and_translate(method_name: str, dims: int, train: list[str], subjects: dict, test_a: Volume, minutes: float,
                        seed: int, workdir: Path, overrides: dict) -> tuple[np.ndarray, np.ndarray, int]:
    from ignite.engine import Events
    from ignite.handlers import TimeLimit

    seed_everything(seed)
    method = build_method(method_name, spatial_dims=dims, **{**NETS.get(method_name, RESNET), **overrides})
    if method.paired:
        a = [ImageRecord(s, subjects[s][0], subjects[s][2]) for s in train]
        b = [ImageRecord(s, subjects[s][1], subjects[s][2]) for s in train]
    else:  # alternate subjects: both halves mix the datasets (protocols), as ../shared/notes/baselines.md
        a = [ImageRecord(s, subjects[s][0], subjects[s][2]) for s in train[0::2]]
        b = [ImageRecord(s, subjects[s][1], subjects[s][2]) for s in train[1::2]]
    patch = [128, 128, 1] if dims == 2 else [48, 48, 48]
    stream = TrainStream(a, b, {"patch_size": patch, "sampler_type": "foreground", "samples_per_volume": 16,
                                "max_length": 64}, batch_size=4 if dims == 2 else 1, paired=method.paired, seed=seed)
    trainer = TranslationTrainer(method, stream, workdir, max_epochs=10**6, epoch_length=100, device="auto",
                                 resume=False, tracking="none", progress=False, log_interval=10**9)
    trainer.add_event_handler(Events.ITERATION_COMPLETED, TimeLimit(limit_sec=int(minutes * 60)))
    trainer.run()
    settings = InferenceSettings(roi_size=(96, 96, 96), overlap=0.25, progress=False)
    result = Translator(trainer.translation_model(), settings).translate(test_a, maps=True)
    return result.output, result.maps["invented"], trainer.state.iteration


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--methods", nargs="+", default=method_names())
    parser.add_argument("--dims", nargs="+", type=int, default=[2, 3])
    parser.add_argument("--minutes", type=float, default=10.0, help="wall-clock training budget per method and dims")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="method options for every method run, e.g. --methods nec --set lambda_ngf=10")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--all-folds", action="store_true")
    parser.add_argument("--output", type=Path, default=Path("benchmark_output"))
    args = parser.parse_args()
    overrides = parse_assignments(args.set)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.output.mkdir(parents=True, exist_ok=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).parent).stdout.strip() or "unknown"
    rows = []
    for task in args.task:
        subjects, default_test = TASKS[task]
        folds = sorted(subjects) if args.all_folds else [default_test]
        for test in folds:
            train = [s for s in sorted(subjects) if s != test]
            test_a, test_b = read_volume(subjects[test][0]), read_volume(subjects[test][1])
            mask = brain_mask(test_a, subjects[test][2])
            mask_volume = Volume(mask.astype(np.float32), test_a.affine, Path("mask"))
            predictions = {name: (data, None, 0) for name, data in
                           baselines(test_a, mask, [subjects[s][1] for s in train[1::2]]).items()}
            for name in args.methods:
                for dims in args.dims:
                    with tempfile.TemporaryDirectory() as tmp:
                        start = time.monotonic()
                        out, invented, iterations = train_and_translate(name, dims, train, subjects, test_a,
                                                                         args.minutes, args.seed, Path(tmp), overrides)
                    predictions[f"{name} {dims}D"] = (out, invented, iterations)
                    print(f"{task} {test} {name} {dims}D: {iterations} iterations, {time.monotonic() - start:.0f} s", flush=True)
            for label, (data, invented, iterations) in predictions.items():
                pred = Volume(np.asarray(data, np.float32), test_a.affine, Path(label))
                row = {"task": task, "test": test, "method": label, "iterations": iterations}
                for protocol_name, protocol in (("", EvaluationProtocol(normalization="each")), ("nec_", EvaluationProtocol.nec())):
                    scores = evaluate_pair(pred, test_b, mask_volume, protocol)
                    row.update({protocol_name + k: v for k, v in scores.items()})
                rows.append(row)
                if invented is not None:
                    stem = f"{task}_{test}_{label.replace(' ', '_')}"
                    folder = args.output / "volumes"
                    folder.mkdir(exist_ok=True)
                    write_volume(folder / f"{stem}.nii.gz", pred.data, test_a)
                    write_volume(folder / f"{stem}_invented.nii.gz", invented, test_a)
                    volume_montage(subjects[test][0], folder / f"{stem}.nii.gz", subjects[test][1],
                                   folder / f"{stem}_invented.nii.gz", args.output / f"{stem}.png", scale_type="each")
            pd.DataFrame(rows).to_csv(args.output / "results.csv", index=False)
    table = pd.DataFrame(rows)
    agg = table.groupby(["task", "method"], sort=False).agg(
        **{f"{m}_{s}": (m, s) for m in ("psnr", "ssim3d", "mae", "nec_psnr", "nec_ssim3d") for s in ("mean", "std")},
        iterations=("iterations", "mean"))
    lines = [
        f"# medtrans quality benchmark — {datetime.date.today()}, commit {commit}, {platform.machine()} "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}",
        "",
        f"Budget {args.minutes:g} min wall clock per method and dims, seed {args.seed}"
        + (f", method options {' '.join(args.set)}" if args.set else "") + "; test subject(s): "
        + ", ".join(sorted(set(table['test']))) + "; training subjects split into disjoint A/B halves (pix2pix: paired).",
        "Scores inside the brain mask, each volume scaled by its own 1–99th brain percentiles to [0, 1] (data range 1). "
        "NEC protocol: histogram matching, σ 0.5 mm, per-volume percentiles. Mean ± std over test subjects (std 0 "
        "with one).",
        "",
        "| task | method | iterations | PSNR dB | SSIM 3D | MAE | NEC-protocol PSNR | NEC-protocol SSIM |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (task, method), r in agg.iterrows():
        std = lambda v: 0.0 if np.isnan(v) else v  # noqa: E731
        lines.append(f"| {task} | {method} | {r['iterations']:.0f} | {r['psnr_mean']:.2f} ± {std(r['psnr_std']):.2f} | "
                     f"{r['ssim3d_mean']:.3f} ± {std(r['ssim3d_std']):.3f} | {r['mae_mean']:.3f} | "
                     f"{r['nec_psnr_mean']:.2f} | {r['nec_ssim3d_mean']:.3f} |")
    (args.output / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    shutil.rmtree(args.output / "volumes", ignore_errors=True)


if __name__ == "__main__":
    main()
