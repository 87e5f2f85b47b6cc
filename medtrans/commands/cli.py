"""The ``medtrans`` command line: one sub-command per job (demo, train, translate, evaluate).

Every option is defined here, with its default shown in ``--help``; the work itself is imported only when a command
runs, so ``--help`` answers at once. A bad option value, a bad input file or an unwritable output is reported in one
line naming the option or the file, with exit status 1 and nothing written; ``--debug`` shows the traceback instead.
SIGINT (Ctrl-C) and SIGTERM stop a command alike: its temporaries and half-written outputs are removed, one line says
so, exit status 130 or 143.
"""

from __future__ import annotations

import argparse
import importlib
import math
import re
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import medtrans
from medtrans import defaults
from medtrans.errors import MedtransError, Terminated
from medtrans.registry import method_names

__all__ = ["build_parser", "main"]


class _UsageError(Exception):
    """A command-line value argparse refused."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad value is one line and exit status 1 (as every other medtrans error)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise _UsageError(f"{self.prog}: error: {message}")


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Shows each option's default (where it has one that is not already in its help)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" not in text and action.default not in (None, False, argparse.SUPPRESS) and action.option_strings:
            default = " ".join(map(str, action.default)) if isinstance(action.default, (list, tuple)) else "%(default)s"
            text += f" (default: {default})"
        return text


# -- value checks (run by argparse, before anything is read) ---------------------------------------------------------
def _number(kind: type, low: float | None = None, high: float | None = None, high_open: bool = False,
            what: str = "") -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, got {text!r}") from None
        if not math.isfinite(value):  # NaN passes every comparison below (each is False), Inf every lower bound
            raise argparse.ArgumentTypeError(f"expected a finite number, got {text}")
        too_high = high is not None and (value >= high if high_open else value > high)
        if (low is not None and value < low) or too_high:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text}")
        return value

    return parse


_positive_int = _number(int, 1, what=">= 1")
_non_negative_int = _number(int, 0, what=">= 0")
_positive_float = _number(float, 1e-12, what="> 0")
_fraction = _number(float, 0.0, 1.0, high_open=True, what="in [0, 1)")
_seed = _number(int, 0, defaults.SEED_MAX, what="in [0, 2**64 - 1]")
_percentile = _number(float, 0.0, 100.0, what="in [0, 100]")


class _Increasing(argparse.Action):
    """A ``LOW HIGH`` pair (``nargs=2``, each value checked by its ``type``) with ``LOW < HIGH``."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        low, high = values
        if not low < high:
            parser.error(f"argument {option_string}: LOW must be below HIGH, got {low:g} {high:g}")
        setattr(namespace, self.dest, (low, high))


_DEVICE = re.compile(r"auto|cpu|cuda(:[0-9]+)?")


def _device(text: str) -> str:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (whether that CUDA device exists is checked when torch is loaded)."""
    if not _DEVICE.fullmatch(text):
        raise argparse.ArgumentTypeError(f"expected one of {', '.join(defaults.DEVICE_TYPES)}, got {text!r}")
    return text


# -- the commands -----------------------------------------------------------------------------------------------------
def _add_demo(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser(
        "demo", parents=[common], formatter_class=_Formatter,
        help="train, translate and score NEC on the embedded dataset (about 6 minutes on 2 CPU cores)",
        description="The whole path on an embedded dataset (or --data): build synthetic T1w/T2w subjects from the "
        "ICBM152 anatomy, train NEC on axial slices for a fixed number of iterations, translate the held-out T1w "
        "volume whole, score it against its real T2w beside two baselines that need no training, and write NIfTI "
        "outputs, faithfulness maps, scores.csv and a labelled montage.png. The result depends on the seed and the "
        "iterations, not on how busy the machine is.")
    p.add_argument("--output", type=Path, default=Path("demo_output"), help="output folder")
    p.add_argument("--data", type=Path, help="use DIR/{A,B,test/A,test/B[,test/mask]} instead of the embedded dataset")
    p.add_argument("--iterations", type=_positive_int, default=defaults.DEMO_ITERATIONS, help="training iterations")
    p.add_argument("--seed", type=_seed, default=0, help="seed of the dataset, the initial weights and the batches")
    p.add_argument("--threads", type=_positive_int,
                   help="torch CPU threads (default: the CPU cores this process may use, at most 4; fixed per machine, "
                   "so a busy machine gives the same result, only later)")
    p.add_argument("--device", type=_device, default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--no-progress", action="store_true", help="no progress lines")
    p.set_defaults(run="medtrans.commands.demo:run_demo_command")


def _add_train(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser(
        "train", parents=[common], formatter_class=_Formatter,
        help="train a translation method on two domains",
        description="Train a method on patches (3D) or slices (2D) drawn from two domains (folders, globs, CSVs or "
        "single NIfTI files). The volumes are read, checked and preprocessed once and kept in memory. Checkpoints go "
        "to OUTPUT (resumed automatically); the trained translator is OUTPUT/generator.pt.")
    p.add_argument("--method", required=True, choices=method_names(), help="the translation method (docs/methods.md)")
    p.add_argument("--data-a", required=True, help="domain A: folder, glob, CSV (subject_id,image[,mask]) or one NIfTI file")
    p.add_argument("--data-b", required=True, help="domain B: folder, glob, CSV or one NIfTI file")
    p.add_argument("--masks-a", help="masks of domain A (folder/glob, matched by subject id)")
    p.add_argument("--masks-b", help="masks of domain B")
    p.add_argument("--output", required=True, type=Path, help="run folder")
    for domain, example in (("a", "'{\"type\": \"zscore\"}'"), ("b", "'{\"type\": \"window\", \"low\": -1024, \"high\": 3000}' for CT")):
        p.add_argument(f"--intensity-{domain}", metavar="JSON",
                       help=f"domain {domain.upper()}'s intensity mapping onto [-1, 1], e.g. {example} (default: the "
                       "foreground's 1st-99th percentiles; docs/data.md)")
    for domain in ("a", "b"):
        p.add_argument(f"--augment-{domain}", metavar="JSON",
                       help=f"torchio augmentation of domain {domain.upper()}'s patches: a JSON list of transforms, "
                       "e.g. '[{\"name\": \"RandomAffine\", \"degrees\": 10}, \"RandomBiasField\", \"RandomGamma\"]' "
                       f"(torchio's {', '.join(n for n in defaults.AUGMENT_TRANSFORMS if n.startswith('Random'))} "
                       "and their fixed versions; docs/training.md#augmentation; default: none)")
    p.add_argument("--dims", type=int, choices=(2, 3), default=3, help="3: volumetric patches; 2: axial slices")
    p.add_argument("--patch-size", type=_positive_int, nargs=3, metavar=("X", "Y", "Z"),
                   help="default {} (3D) or {} (2D)".format(*(" ".join(map(str, defaults.PATCH_SIZE[d])) for d in (3, 2))))
    p.add_argument("--batch-size", type=_positive_int,
                   help=f"patches per domain per step (default {defaults.BATCH_SIZE[3]} in 3D, {defaults.BATCH_SIZE[2]} in 2D)")
    p.add_argument("--iterations", type=_positive_int, default=defaults.ITERATIONS, help="total iterations")
    p.add_argument("--checkpoint-interval", type=_positive_int, default=defaults.CHECKPOINT_INTERVAL,
                   help="iterations between checkpoints and validations (the last iteration is always saved)")
    p.add_argument("--sampler", choices=defaults.SAMPLER_TYPES, default=defaults.SAMPLER_TYPE,
                   help="patch positions: uniform, or around voxels of the mask / the non-background")
    p.add_argument("--workers", type=_non_negative_int, default=defaults.NUM_WORKERS,
                   help="threads that read and preprocess the volumes, once, before training")
    p.add_argument("--memory-gb", type=_positive_float, default=defaults.MEMORY_GB,
                   help="memory the preprocessed training volumes may take")
    p.add_argument("--storage", choices=defaults.STORAGE_TYPES, default=defaults.STORAGE,
                   help="where the preprocessed volumes are held: auto (in memory when they fit --memory-gb, else "
                        "the on-disk cache), memory, or disk")
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="the on-disk cache's folder, which runs may share (default $MEDTRANS_CACHE_DIR, else "
                        "~/.cache/medtrans)")
    p.add_argument("--device", type=_device, default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--precision", choices=defaults.PRECISION_TYPES, default=defaults.PRECISION,
                   help="auto: fp32 on CPU; on CUDA TF32, and bf16 autocast for batches of 96^3 voxels or more")
    p.add_argument("--seed", type=_seed, default=0, help="seed of the initial weights and of the batches")
    p.add_argument("--tracking", choices=defaults.TRACKING_TYPES, default="tensorboard", help="where losses are recorded")
    p.add_argument("--log-interval", type=_positive_int, default=defaults.LOG_INTERVAL,
                   help="iterations between log lines (losses, it/s, data wait, time left)")
    p.add_argument("--montage-interval", type=_non_negative_int, default=500, help="iterations between PNG montages (0: none)")
    p.add_argument("--validate", nargs="+", action="append", metavar="PATH",
                   help="a validation pair A B [MASK] (repeatable); scored at every checkpoint, the best generator kept")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="method options as JSON values, e.g. lambda_ngf=10 'discriminator={\"num_scales\": 1}' "
                   "(docs/methods.md lists each method's options)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (log lines only)")
    p.set_defaults(run="medtrans.commands.train:run_train")


def _add_translate(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    roi = " ".join(map(str, defaults.ROI_SIZE))
    p = subparsers.add_parser(
        "translate", parents=[common], formatter_class=_Formatter,
        help="translate NIfTI volumes / DICOM series with a trained model",
        description="Translate whole volumes with a medtrans model. The output has exactly the input's shape, affine "
        "and header codes, float32, in target-domain intensities. 3D models run by sliding window (Gaussian "
        "blending) or in one pass when --roi-size covers the volume; 2D models run slice by slice. The output may "
        "never be the input itself or lie inside an input folder.")
    p.add_argument("input", type=Path, help="a .nii/.nii.gz file, a DICOM series folder, or a folder of them")
    p.add_argument("output", type=Path, help="output .nii/.nii.gz file (a folder when INPUT is a folder)")
    p.add_argument("--model", type=Path, required=True, help="medtrans checkpoint (.pt) or bundle folder")
    p.add_argument("--mask", type=Path, help="foreground mask on the input's grid for the intensity statistics")
    p.add_argument("--roi-size", type=_positive_int, nargs=3, metavar=("X", "Y", "Z"),
                   help=f"3D models: sliding window (default: the model's, else {roi}); larger than the volume = one pass")
    p.add_argument("--overlap", type=_fraction, help=f"3D models: window overlap in [0, 1) (default {defaults.OVERLAP})")
    p.add_argument("--sw-batch-size", type=_positive_int, help=f"3D models: windows per forward pass (default {defaults.SW_BATCH_SIZE})")
    p.add_argument("--blend-mode", choices=defaults.BLEND_MODES, help=f"3D models: window blending (default {defaults.BLEND_MODES[0]})")
    p.add_argument("--slice-axis", type=int, choices=(0, 1, 2), help="2D models: axis of the RAS volume to slice (default 2, axial)")
    p.add_argument("--batch-size", type=_positive_int, help=f"2D models: slices per forward pass (default {defaults.SLICE_BATCH_SIZE})")
    p.add_argument("--device", type=_device, help="auto (default), cpu, cuda, cuda:N")
    p.add_argument("--precision", choices=defaults.PRECISION_TYPES,
                   help="auto (default): fp32 on CPU; on CUDA TF32, and bf16 for windows of 96^3 voxels or more")
    p.add_argument("--target-intensity", choices=("model", "source", "histogram", "window"), default="model",
                   help="map outputs back with the model's recorded target range, the input's own mapping, "
                   "histogram matching to --reference, or --window LOW HIGH")
    p.add_argument("--reference", type=Path, help="reference target-domain volume for --target-intensity histogram")
    p.add_argument("--window", type=_number(float), nargs=2, action=_Increasing, metavar=("LOW", "HIGH"),
                   help="target range for --target-intensity window (LOW < HIGH)")
    p.add_argument("--faithfulness-map", type=Path,
                   help="also write the per-voxel NGF alignment map 1 - 0.5<n(s),n(o)>^2 here, with <stem>_invented and "
                   "<stem>_erased beside it (edges the output added / lost); a folder when INPUT is a folder. "
                   "See docs/inference.md")
    p.add_argument("--faithfulness-eps", type=_positive_float, default=defaults.FAITHFULNESS_EPS, help="epsilon of the faithfulness maps, normalised units")
    p.add_argument("--faithfulness-report", type=Path,
                   help="also write the regions of invented or erased structure beyond what real pairs show, as .json "
                   "or .csv, with a .png montage of them beside it; a folder (of .json) when INPUT is a folder. "
                   "See docs/inference.md")
    p.add_argument("--faithfulness-calibration", type=Path,
                   help="calibration JSON of the report (written by benchmarks/faithfulness_regions.py); default: "
                   "the built-in T1->T2 one")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(run="medtrans.commands.translate:run_translate")


def _add_evaluate(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser(
        "evaluate", parents=[common], formatter_class=_Formatter,
        help="score translations against targets (PSNR, SSIM, MAE in a mask; synthetic CT in HU)",
        description="Score translations against targets, the way a careful reviewer would: both on one grid, a "
        "fixed and stated intensity normalisation, PSNR / SSIM (3D and per axial slice) / MAE inside the mask. "
        "--protocol synthrad scores a synthetic CT in HU as the SynthRAD challenges do: MAE in HU, and PSNR (data "
        "range 4024) and MS-SSIM of both clipped to -1024..3000 HU, inside the body mask (made from the CT target when "
        "--mask is not given). The protocol used is printed with the scores; docs/evaluation.md explains each choice.")
    p.add_argument("prediction", type=Path, help="a predicted NIfTI, or a folder of them")
    p.add_argument("target", type=Path, help="the target NIfTI, or a folder of same-named targets")
    p.add_argument("--mask", type=Path, help="mask file, or folder of same-named masks (default: whole volume; with "
                   "--protocol synthrad the body mask made from the target)")
    p.add_argument("--protocol", choices=("default", "nec", "synthrad"), default="default",
                   help="default: the options below; nec = --histogram-match --sigma-mm 0.5 --normalization each; "
                   "synthrad = synthetic CT in HU (MAE, PSNR, MS-SSIM); a named protocol takes none of the options "
                   "below but --hu-range")
    p.add_argument("--normalization", choices=defaults.NORMALIZATIONS,
                   help="target: both scaled by the target's percentiles; each: each by its own; none: raw values "
                   "(default: target)")
    p.add_argument("--percentiles", type=_percentile, nargs=2, action=_Increasing, metavar=("LOW", "HIGH"),
                   help="percentiles of the normalisation, 0 <= LOW < HIGH <= 100 (default: 1 99)")
    p.add_argument("--data-range", type=_positive_float, help="with --normalization none: the fixed data range")
    p.add_argument("--histogram-match", action="store_true", help="match the prediction's histogram to the target's first")
    p.add_argument("--sigma-mm", type=_number(float, 0.0, what=">= 0"),
                   help="Gaussian smoothing of both volumes in mm (default: 0, none)")
    p.add_argument("--hu-range", type=_number(float), nargs=2, action=_Increasing, metavar=("LOW", "HIGH"),
                   help="with --protocol synthrad: the HU range PSNR and MS-SSIM clip both volumes to; its width is "
                   "PSNR's data range (default: -1024 3000; SynthRAD 2025's later code uses -1024 3071)")
    p.add_argument("--csv", type=Path, help="write the per-subject table here (and the summary to <stem>_summary.csv)")
    p.set_defaults(run="medtrans.commands.evaluate:run_evaluate")


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every sub-command."""
    parser = _Parser(prog="medtrans", description=medtrans.__doc__)
    parser.add_argument("--version", action="version", version=f"medtrans {medtrans.__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for add in (_add_demo, _add_train, _add_translate, _add_evaluate):
        add(subparsers, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``medtrans`` console script; returns the exit status."""
    for stream in (sys.stdout, sys.stderr):  # an ASCII terminal gets escapes, not a UnicodeEncodeError
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except _UsageError as err:
        print(err, file=sys.stderr)
        return 1
    if getattr(args, "run", None) is None:
        parser.print_help()
        return 2
    module, function = args.run.split(":")
    previous = _catch_sigterm()
    try:
        return int(getattr(importlib.import_module(module), function)(args) or 0)
    except MedtransError as err:
        if args.debug:
            raise
        print(f"medtrans {args.command}: error: {err}", file=sys.stderr)
        return 1
    except Terminated:
        print(f"medtrans {args.command}: terminated", file=sys.stderr)
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        print(f"medtrans {args.command}: interrupted", file=sys.stderr)
        return 128 + signal.SIGINT
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _raise_terminated(signum: int, frame: Any) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once: a second SIGTERM does not cut the clean-up short
    raise Terminated(f"signal {signum}")


def _catch_sigterm() -> Any:
    """Make SIGTERM raise :class:`~medtrans.errors.Terminated` (a ``KeyboardInterrupt``) in the main thread, so that
    it cleans up as Ctrl-C does; returns the handler to restore (``None`` outside the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _raise_terminated)


if __name__ == "__main__":
    sys.exit(main())
