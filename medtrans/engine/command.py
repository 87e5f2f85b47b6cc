"""``medtrans train``: train any method on two folders from the command line (bundles offer the same via config)."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from medtrans.errors import InputError

__all__ = ["parse_assignments", "register", "run_train"]


def parse_assignments(items: list[str]) -> dict[str, Any]:
    """``["lambda_ngf=10", 'generator={"channels": 16}']`` → ``{"lambda_ngf": 10, "generator": {"channels": 16}}``.

    Values are JSON; anything that is not valid JSON is taken as a string.
    """
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InputError("--set", f"expected KEY=VALUE, got {item!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``medtrans train``."""
    from medtrans.engine.trainer import TRACKING_TYPES
    from medtrans.methods import method_names

    p = subparsers.add_parser(
        "train",
        help="train a translation method on two domains",
        description="Train a method on patches (3D) or slices (2D) drawn from two folders/globs/CSVs of volumes. "
        "Checkpoints go to OUTPUT and are resumed automatically; the final generator is OUTPUT/generator.pt.",
    )
    p.add_argument("--method", required=True, choices=method_names())
    p.add_argument("--data-a", required=True, help="domain A: folder, glob or CSV (subject_id,image[,mask])")
    p.add_argument("--data-b", required=True, help="domain B: folder, glob or CSV")
    p.add_argument("--masks-a", help="masks of domain A (folder/glob, matched by subject id)")
    p.add_argument("--masks-b", help="masks of domain B")
    p.add_argument("--output", required=True, type=Path, help="run folder")
    p.add_argument("--dims", type=int, choices=(2, 3), default=3, help="3: volumetric patches; 2: axial slices")
    p.add_argument("--patch-size", type=int, nargs=3, help="default 64 64 64 (3D) or 128 128 1 (2D)")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--iterations", type=int, default=20000, help="total iterations")
    p.add_argument("--epoch-length", type=int, default=100, help="iterations per epoch (logging/validation period)")
    p.add_argument("--sampler", choices=("uniform", "foreground"), default="foreground")
    p.add_argument("--workers", type=int, default=2, help="processes loading volumes")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"), default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tracking", choices=TRACKING_TYPES, default="tensorboard")
    p.add_argument("--log-interval", type=int, default=10, help="iterations between log lines / tracked scalars")
    p.add_argument("--montage-interval", type=int, default=500)
    p.add_argument("--validate", nargs="+", action="append", metavar="PATH",
                   help="a validation pair A B [MASK] (repeatable); the best generator is kept by PSNR")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="method options as JSON values, e.g. lambda_ngf=10 'generator={\"channels\": 16}'")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run_train)


def run_train(args: argparse.Namespace) -> int:
    """Body of ``medtrans train``."""
    from medtrans.engine import TrainStream, TranslationTrainer
    from medtrans.methods import build_method
    from medtrans.utils import seed_everything

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    options = parse_assignments(args.set)
    patch = args.patch_size or ([64, 64, 64] if args.dims == 3 else [128, 128, 1])
    seed_everything(args.seed)
    method = build_method(args.method, spatial_dims=args.dims, precision=args.precision, **options)
    data = TrainStream(args.data_a, args.data_b,
                       {"patch_size": patch, "sampler_type": args.sampler, "num_workers": args.workers},
                       batch_size=args.batch_size, masks_a=args.masks_a, masks_b=args.masks_b, paired=method.paired,
                       seed=args.seed)
    epochs = max(1, -(-args.iterations // args.epoch_length))
    validation = None
    if args.validate:
        bad = [v for v in args.validate if len(v) not in (2, 3)]
        if bad:
            raise InputError("--validate", f"expects A B [MASK], got {bad[0]}")
        validation = {"pairs": [v + [None] * (3 - len(v)) for v in args.validate], "interval": 1, "metric": "psnr",
                      "roi_size": patch if args.dims == 3 else [96, 96, 96]}
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "func"}
    trainer = TranslationTrainer(
        method, data, args.output, max_epochs=epochs, epoch_length=args.epoch_length, device=args.device,
        tracking=args.tracking, log_interval=args.log_interval, montage_interval=args.montage_interval, validation=validation,
        inference={"roi_size": patch} if args.dims == 3 else {}, config=config, progress=not args.no_progress,
    )
    trainer.run()
    trainer.export(args.output / "generator.pt")
    return 0
