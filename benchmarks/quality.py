"""Real-data translation quality on a fixed iteration budget, beside training-free baselines, scored by one scorer.

    python benchmarks/quality.py [--task t1-t2 t1c-flair] [--methods nec ...] [--dims 3] [--iterations 2000]
                                 [--seeds 0 1 2] [--split two all-but-one] [--folds default|all] [--patch X Y Z]
                                 [--set KEY=VALUE ...] [--intensity SPEC] [--augment SPEC] [--label NAME] [--threads N] [--output DIR]
                                 [--from-models DIR]

Tasks (../shared/data, or $MEDTRANS_SHARED_DATA):
- ``t1-t2``: lesjak-ms-mni (3 MS patients) + tcga-lgg-brainles (2 glioma patients), T1 → T2.
- ``t1c-flair``: brats2015-deepmedic (4 glioma patients), T1c → FLAIR.
- ``motion``: motion correction, the second task of the Cycle-MedGAN paper: the T1s of ``t1-t2``, corrupted by rigid
  motion during the acquisition (torchio's ``RandomMotion`` with its defaults — up to 10° and 10 mm, 2 movements —
  seeded per subject, written once under ``<out>/motion_inputs``) → the uncorrupted originals. Use ``--split two``:
  domain A holds some subjects' corrupted T1s, domain B other subjects' clean ones; the baseline is the corrupted input.

Splits — subject-disjoint: the test subject is never seen, in either domain:
- ``two``: the other subjects, sorted, alternate between domain A (their T1 / T1c) and domain B (their T2 / FLAIR),
  so A and B come from different patients and both mix the datasets (the split the public CUT/CycleGAN baselines were
  measured on).
- ``all-but-one``: A = the T1s of every other subject, B = their T2s, used unpaired (batches draw A and B
  independently).
pix2pix, the paired baseline, always trains on both contrasts of every other subject, paired.
``--folds default`` tests lesjak patient26 (T1→T2) / brats pat0006 (T1c→FLAIR); ``all`` leaves each subject out in turn.

Training: medtrans's own engine and defaults (networks, schedule), foreground sampling, 3D 48³ patches batch 1 or 2D
128² axial slices batch 4 (``--patch`` changes it), both domains' intensities mapped by medtrans's default
(1st–99th foreground percentiles → [-1, 1]; ``--intensity`` changes it), for exactly ``--iterations`` iterations per
seed — figures are reproducible across machines; the wall time is reported beside them. The test volume is translated whole
(3D: 96³ windows, overlap 0.25; 2D: every axial slice).

Scores (``medtrans.evaluate``, inside the brain mask): each volume scaled by its own 1st–99th brain percentiles to
[0, 1], data range 1 (the datasets' raw scales differ); and the NEC protocol (histogram matching, σ 0.5 mm). Also:
``checkerboard`` — the output's energy at the 2-voxel period relative to the target's (1 = none added); ``texture`` —
the share of its variance inside the brain at the finest scale (a 1-voxel Gaussian) relative to the target's (1 = as
much fine texture as the real target, above 1 = speckle it lacks);
``r_target`` / ``r_source`` — the correlation of the output with the target and with the source inside the mask (a
T1→T2 output that flipped the contrast has r_source < 0 and r_target > 0). Baselines: the rescaled input, the input
histogram-matched to the pooled training targets, and the contrast-inverted input histogram-matched the same way.
Each translation is also scored after the same matching to the pooled training targets (rows ``<method>, output
histogram-matched``: what ``medtrans translate --target-intensity histogram --reference`` does with one training
target as the reference); that row uses no more of the test subject than the baselines do.

Writes ``<out>/runs.csv`` (one row per run, appended, so several invocations share one table), ``<out>/results.md``
(mean ± std over seeds and folds per task, split, method and label), one montage PNG per run and each run's trained
translator, ``<out>/models/<run>.pt`` (``medtrans translate --model`` applies it again, with other inference settings).
``--from-models DIR`` trains nothing: each run's translator is read from ``DIR/models/<run>.pt`` (same task, test,
split, method, seed and label) and scored again (its training minutes are then not known).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import functools
import itertools
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from medtrans.data import ImageRecord, TrainStream
from medtrans.data.augment import parse_augment
from medtrans.datasets import add_motion
from medtrans.data.intensity import fit_intensity, foreground_mask
from medtrans.engine import TranslationTrainer
from medtrans.commands.train import parse_assignments
from medtrans.evaluate import EvaluationProtocol, evaluate_pair, histogram_baselines, match_to_pooled, pooled_foreground
from medtrans.inference import InferenceSettings, Translator
from medtrans.io import Volume, read_volume, write_volume
from medtrans.methods import build_method, method_class, method_names
from medtrans.metrics import checkerboard
from medtrans.model import load_model
from medtrans.utils import seed_everything
from medtrans.visualize import volume_montage

DATA = Path(os.environ.get("MEDTRANS_SHARED_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))
LESJAK = {f"lesjak-{p}": (DATA / "lesjak-ms-mni" / p / "T1.nii.gz", DATA / "lesjak-ms-mni" / p / "T2.nii.gz", None)
          for p in ("patient07", "patient19", "patient26")}
TCGA = {f"tcga-{s}": (DATA / "tcga-lgg-brainles" / s / "t1.nii.gz", DATA / "tcga-lgg-brainles" / s / "t2.nii.gz",
                      DATA / "tcga-lgg-brainles" / s / "brainmask.nii.gz") for s in ("TCGA-DU-7294", "TCGA-FG-6692")}
BRATS = {f"brats-{s}": (DATA / "brats2015-deepmedic" / s / "t1c.nii.gz", DATA / "brats2015-deepmedic" / s / "flair.nii.gz",
                        DATA / "brats2015-deepmedic" / s / "brainmask.nii.gz")
         for s in ("brats_2013_pat0003_1", "brats_2013_pat0004_1", "brats_2013_pat0005_1", "brats_2013_pat0006_1")}
TASKS = {"t1-t2": ({**LESJAK, **TCGA}, "lesjak-patient26"), "t1c-flair": (BRATS, "brats-brats_2013_pat0006_1"),
         "motion": ({**LESJAK, **TCGA}, "lesjak-patient26")}
PATCH = {2: [128, 128, 1], 3: [48, 48, 48]}
BATCH = {2: 4, 3: 1}
INFERENCE = InferenceSettings(roi_size=(96, 96, 96), overlap=0.25, progress=False)


def brain_mask(volume: Volume, mask_path: Path | None) -> np.ndarray:
    if mask_path is not None:
        return read_volume(mask_path, allow_constant=True).data > 0.5
    return foreground_mask(volume.data)


def split_records(split: str, train: list[str], subjects: dict, paired: bool) -> tuple[list, list]:
    """Domain A and B records of a split (see the module doc)."""
    if paired or split == "all-but-one":
        a_ids = b_ids = train
    elif split == "two":
        a_ids, b_ids = train[0::2], train[1::2]
    else:
        raise ValueError(f"unknown split {split!r}")
    return ([ImageRecord(s, subjects[s][0], subjects[s][2]) for s in a_ids],
            [ImageRecord(s, subjects[s][1], subjects[s][2]) for s in b_ids])


def motion_corrupted(subjects: dict, folder: Path) -> dict:
    """The ``motion`` task's subjects: ``(corrupted T1, clean T1, mask)``, the corrupted volumes written once to
    ``folder`` (each subject's motion drawn from its own seed, so every run and machine sees the same inputs)."""
    folder.mkdir(parents=True, exist_ok=True)
    corrupted = {}
    for i, (name, (t1, _, mask)) in enumerate(sorted(subjects.items())):
        path = folder / f"{name}_t1_motion.nii.gz"
        if not path.is_file():
            add_motion(t1, path, seed=1000 + i)
        if mask is None:  # the brain from the clean T1: the corrupted one's ghosts reach into the background
            mask = folder / f"{name}_brainmask.nii.gz"
            if not mask.is_file():
                clean = read_volume(t1)
                write_volume(mask, foreground_mask(clean.data).astype(np.float32), clean)
        corrupted[name] = (path, t1, mask)
    return corrupted


def baselines(test_a: Volume, mask: np.ndarray, pooled: np.ndarray) -> dict[str, np.ndarray]:
    rescaled = fit_intensity({"type": "percentile"}, test_a.data, mask).forward(test_a.data)
    matched = histogram_baselines(test_a.data, mask, pooled)
    return {"baseline: rescaled input": rescaled, **{f"baseline: {k}": v for k, v in matched.items()}}


def correlation(x: np.ndarray, y: np.ndarray, mask: np.ndarray) -> float:
    return float(np.corrcoef(x[mask], y[mask])[0, 1])


def train_and_translate(method_name: str, dims: int, records: tuple[list, list], test_a: Volume, iterations: int,
                        seed: int, patch: list[int] | None, workdir: Path, overrides: dict,
                        batch_size: int | None = None, intensity: dict | None = None, eval_every: int = 0, on_eval=None,
                        model_path: Path | None = None, augment: str | None = None) -> dict:
    """Train, then translate ``test_a`` whole; every ``eval_every`` iterations before the end, also translate it and
    hand ``(iteration, output)`` to ``on_eval`` (the learning curve). The trained translator is saved to ``model_path``
    if given. With ``ema_decay`` the translator is the generator's moving average, and the generator's last weights
    translate ``test_a`` too (``"last_output"``): the same run, with and without the average."""
    seed_everything(seed)
    method = build_method(method_name, spatial_dims=dims, **overrides)
    patch = patch or PATCH[dims]
    method.check_patch(patch)
    transforms = {f"transform_{d}": parse_augment(augment, "--augment") for d in "ab"} if augment else {}
    stream = TrainStream(*records, {"patch_size": patch, "sampler_type": "foreground", "num_workers": 1},
                         batch_size=batch_size or BATCH[dims], paired=method.paired, seed=seed, **transforms,
                         **{f"preprocessing_{d}": {"intensity": intensity} for d in "ab" if intensity})
    trainer = TranslationTrainer(method, stream, workdir, iterations=iterations, device="auto", resume=False,
                                 tracking="none", progress=False, log_interval=max(1, iterations // 10))
    if eval_every:
        from ignite.engine import Events

        def evaluate(engine) -> None:
            if engine.state.iteration < iterations:
                method.eval()
                on_eval(engine.state.iteration, Translator(trainer.model, INFERENCE).translate(test_a).output)
                method.train()

        trainer.add_event_handler(Events.ITERATION_COMPLETED(every=eval_every), evaluate)
    start = time.perf_counter()
    trainer.run()
    seconds = time.perf_counter() - start
    if model_path is not None:
        trainer.export(model_path)
    run = {**translate(trainer.model, test_a), "seconds": seconds}
    if method.generator_ema is not None:
        last = dataclasses.replace(trainer.model, network=method.generator)
        run["last_output"] = Translator(last, INFERENCE).translate(test_a).output
    return run


def model_stem(task: str, test: str, split: str, name: str, dims: int, seed: int, label: str) -> str:
    """The file name (without suffix) of one run's saved translator and montage."""
    return f"{task}_{test}_{split}_{name}{dims}d_s{seed}_{label}".replace(" ", "_")


def saved_model(output: Path, stem: str) -> Path:
    """Where a run writing to ``output`` saves its translator."""
    return output / "models" / f"{stem}.pt"


def translate(model, test_a: Volume) -> dict:
    """``test_a`` translated whole by ``model``, with its invented-structure map."""
    result = Translator(model, INFERENCE).translate(test_a, maps=True)
    return {"output": result.output, "invented": result.maps["invented"]}


def score(pred: np.ndarray, test_a: Volume, test_b: Volume, mask: np.ndarray) -> dict[str, float]:
    mask_volume = Volume(mask.astype(np.float32), test_a.affine, Path("mask"))
    volume = Volume(np.asarray(pred, np.float32), test_a.affine, Path("prediction"))
    row = {}
    for prefix, protocol in (("", EvaluationProtocol(normalization="each")), ("nec_", EvaluationProtocol.nec())):
        row.update({prefix + k: v for k, v in evaluate_pair(volume, test_b, mask_volume, protocol).items()})
    row["checkerboard"] = checkerboard(pred, test_b.data, mask)
    row["r_target"] = correlation(pred, test_b.data, mask)
    row["r_source"] = correlation(pred, test_a.data, mask)
    return row


def record_curve(rows: list, base: dict, test_a: Volume, test_b: Volume, mask: np.ndarray, iteration: int,
                 output: np.ndarray) -> None:
    """A learning-curve row: the test subject scored at an intermediate iteration."""
    rows.append({**base, "iterations": iteration, "seconds": np.nan, **score(output, test_a, test_b, mask)})
    print(f"  {base['method']} seed {base['seed']} at {iteration}: PSNR {rows[-1]['psnr']:.2f} SSIM "
          f"{rows[-1]['ssim3d']:.3f} r(source) {rows[-1]['r_source']:.2f}", flush=True)


def summarize(table: pd.DataFrame) -> list[str]:
    keys = ["task", "split", "method", "label", "iterations"]
    metrics = ("psnr", "ssim3d", "mae", "nec_psnr", "nec_ssim3d", "checkerboard", "texture", "r_source")
    lines = ["| task | split | method | label | iterations | runs | train min | PSNR dB | SSIM 3D | MAE | NEC PSNR | "
             "NEC SSIM | checkerboard | texture | r(source) |", "|" + "---|" * 15]
    for group, rows in table.groupby(keys, sort=False, dropna=False):
        cells = []
        for m in metrics:
            values = rows[m].to_numpy(float)
            std = values.std(ddof=1) if len(values) > 1 else 0.0
            digits = 2 if m in ("psnr", "nec_psnr", "checkerboard", "texture") else 3
            cells.append(f"{values.mean():.{digits}f} ± {std:.{digits}f}")
        minutes = rows["seconds"].mean() / 60 if rows["seconds"].notna().any() else float("nan")
        lines.append(f"| {' | '.join(str(g) for g in group)} | {len(rows)} | {minutes:.1f} | {' | '.join(cells)} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--methods", nargs="+", default=["nec"])
    parser.add_argument("--dims", nargs="+", type=int, default=[3])
    parser.add_argument("--iterations", type=int, default=2000)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--split", nargs="+", default=["two"], choices=["two", "all-but-one"])
    parser.add_argument("--folds", default="default", choices=["default", "all"])
    parser.add_argument("--test", nargs="+", help="test subjects (overrides --folds)")
    parser.add_argument("--patch", type=int, nargs=3, help="training patch (default 48³ in 3D, 128² slices in 2D)")
    parser.add_argument("--batch-size", type=int, help="patches per domain per step (default 1 in 3D, 4 in 2D)")
    parser.add_argument("--eval-every", type=int, default=0,
                        help="also score the test subject every N iterations (rows with those iterations; wall time not counted)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="method options for every run")
    parser.add_argument("--intensity", type=json.loads, metavar="SPEC",
                        help='both domains\' intensity mapping, a JSON spec, e.g. \'{"type": "zscore", "sigmas": 3}\'')
    parser.add_argument("--augment", metavar="SPEC",
                        help="both domains' torchio augmentation, as medtrans train --augment-a takes it (a JSON list)")
    parser.add_argument("--label", default="default", help="names this configuration in the tables")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--no-baselines", action="store_true")
    parser.add_argument("--output", type=Path, default=Path("benchmark_output"))
    parser.add_argument("--from-models", type=Path, metavar="DIR",
                        help="train nothing: score the translators an earlier --output DIR saved, again (give that run's "
                             "--iterations and --label too: they name the files and label the rows)")
    args = parser.parse_args()
    tests = {task: args.test or (sorted(TASKS[task][0]) if args.folds == "all" else [TASKS[task][1]]) for task in args.task}
    unknown = [f"test subject {t!r} of task {task}" for task in args.task for t in tests[task] if t not in TASKS[task][0]]
    unknown += [f"method {name!r}" for name in args.methods if name not in method_names()]
    if unknown:
        sys.exit(f"error: unknown {unknown[0]}")
    if args.from_models:
        missing = [path for task in args.task for test, split, name, dims, seed in
                   itertools.product(tests[task], args.split, args.methods, args.dims, args.seeds)
                   if not (path := saved_model(args.from_models, model_stem(task, test, split, name, dims, seed,
                                                                            args.label))).is_file()]
        if missing:
            sys.exit(f"error: --from-models: no saved translator {missing[0]} ({len(missing)} missing)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    overrides = parse_assignments(args.set)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.output.mkdir(parents=True, exist_ok=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).parent).stdout.strip() or "unknown"
    csv = args.output / "runs.csv"
    options = " ".join(args.set + ([f"intensity={json.dumps(args.intensity)}"] if args.intensity else [])
                       + ([f"augment={args.augment}"] if args.augment else []))
    common = {"label": args.label, "options": options, "commit": commit, "threads": torch.get_num_threads(),
              "machine": f"{platform.machine()} {os.cpu_count()} cpus", "torch": torch.__version__,
              "date": str(datetime.date.today())}
    for task in args.task:
        subjects = motion_corrupted(TASKS[task][0], args.output / "motion_inputs") if task == "motion" else TASKS[task][0]
        for test in tests[task]:
            train = [s for s in sorted(subjects) if s != test]
            test_a, test_b = read_volume(subjects[test][0]), read_volume(subjects[test][1])
            mask = brain_mask(test_a, subjects[test][2])
            rows = []
            for split in args.split:
                pooled = pooled_foreground([r.image for r in split_records(split, train, subjects, False)[1]])
                if not args.no_baselines:
                    for name, pred in baselines(test_a, mask, pooled).items():
                        rows.append({"task": task, "test": test, "split": split, "method": name, "dims": None,
                                     "seed": None, "iterations": 0, "seconds": np.nan, **score(pred, test_a, test_b, mask)})
                for name in args.methods:
                    paired = method_class(name).paired
                    records = split_records(split, train, subjects, paired)
                    for dims in args.dims:
                        for seed in args.seeds:
                            label = f"{name} {dims}D"
                            base = {"task": task, "test": test, "split": split, "method": label, "dims": dims, "seed": seed}

                            on_eval = functools.partial(record_curve, rows, base, test_a, test_b, mask)
                            stem = model_stem(task, test, split, name, dims, seed, args.label)
                            if args.from_models:
                                run = {**translate(load_model(saved_model(args.from_models, stem)), test_a), "seconds": np.nan}
                            else:
                                with tempfile.TemporaryDirectory() as tmp:
                                    run = train_and_translate(name, dims, records, test_a, args.iterations, seed,
                                                              args.patch, Path(tmp), overrides, args.batch_size,
                                                              args.intensity, args.eval_every, on_eval,
                                                              model_path=saved_model(args.output, stem),
                                                              augment=args.augment)
                            row = {**base, "iterations": args.iterations, "seconds": run["seconds"],
                                   **score(run["output"], test_a, test_b, mask)}
                            rows.append(row)
                            matched = score(match_to_pooled(run["output"], mask, pooled), test_a, test_b, mask)
                            rows.append({**row, "method": f"{label}, output histogram-matched", **matched})
                            if "last_output" in run:
                                rows.append({**row, "method": f"{label} (last weights)",
                                             **score(run["last_output"], test_a, test_b, mask)})
                                print(f"  last weights instead of the average: PSNR {rows[-1]['psnr']:.2f} SSIM "
                                      f"{rows[-1]['ssim3d']:.3f} r(source) {rows[-1]['r_source']:.2f}", flush=True)
                            print(f"{task} {test} {split} {label} seed {seed} [{args.label}]: {args.iterations} it in "
                                  f"{run['seconds'] / 60:.1f} min; PSNR {row['psnr']:.2f} SSIM {row['ssim3d']:.3f} "
                                  f"checkerboard {row['checkerboard']:.2f} texture {row['texture']:.2f} r(source) {row['r_source']:.2f}; output "
                                  f"histogram-matched: PSNR {matched['psnr']:.2f} SSIM {matched['ssim3d']:.3f}", flush=True)
                            with tempfile.TemporaryDirectory() as tmp:
                                files = [Path(tmp) / f"{k}.nii.gz" for k in ("out", "invented")]
                                write_volume(files[0], run["output"], test_a)
                                write_volume(files[1], run["invented"], test_a)
                                volume_montage(subjects[test][0], files[0], subjects[test][1], files[1],
                                               args.output / f"{stem}.png", scale_type="each")
            frame = pd.DataFrame([{**r, **common} for r in rows])
            frame.to_csv(csv, mode="a", header=not csv.exists(), index=False)
    table = pd.read_csv(csv, keep_default_na=False, na_values=[""], dtype={"commit": str})
    lines = [f"# medtrans quality benchmark — {args.output}", "",
             "Mean ± std over the runs (seeds × test subjects) of each configuration; iterations per run, training "
             "minutes per run on the machine in runs.csv. Scores inside the brain mask, each volume scaled by its "
             "own 1–99th percentiles (data range 1); NEC protocol: histogram matching, σ 0.5 mm.", "",
             *summarize(table)]
    (args.output / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
