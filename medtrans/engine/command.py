"""``medtrans train``: train any method on two domains from the command line (bundles offer the same via config).

Everything that can be checked without reading an image is checked first — the output folder, every ``--set`` option
against the method's own arguments, the networks against the patch size (on PyTorch's meta device) — so a
configuration that cannot work stops at once with one line naming the option to change.
"""

from __future__ import annotations

import argparse
import difflib
import inspect
import json
import logging
import os
from pathlib import Path
from typing import Any

from medtrans import defaults
from medtrans.errors import InputError

__all__ = ["check_method_options", "method_options", "parse_assignments", "run_train"]


def parse_assignments(items: list[str]) -> dict[str, Any]:
    """``["lambda_ngf=10", 'generator={"channels": [16, 32]}']`` → ``{"lambda_ngf": 10, "generator": {...}}``.

    Values are JSON; a value that is not JSON is taken as a plain string, unless it starts like JSON (``{``, ``[``,
    ``"``), which is an error.

    Raises:
        InputError: naming ``--set``, for an item without ``=`` or a broken JSON value.
    """
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InputError("--set", f"expected KEY=VALUE, got {item!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError as err:
            if value.lstrip()[:1] in ("{", "[", '"'):
                raise InputError("--set", f"{key}: {value!r} is not valid JSON ({err.msg} at character {err.pos})") from None
            out[key] = value
    return out


def method_options(name: str) -> dict[str, inspect.Parameter]:
    """The keyword options of method ``name``: its own constructor's and those of its base classes."""
    from medtrans.methods.base import TranslationMethod, method_class

    params: dict[str, inspect.Parameter] = {}
    for cls in method_class(name).__mro__:
        if cls is object or "__init__" not in vars(cls):
            continue
        for param in inspect.signature(cls.__init__).parameters.values():
            if param.kind in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY) and param.name not in ("self", "spatial_dims"):
                params.setdefault(param.name, param)
        if cls is TranslationMethod:
            break
    return params


def _type_problem(value: Any, annotation: str) -> str | None:
    """Why ``value`` does not fit a parameter annotated ``annotation`` (a string; ``None`` when it fits)."""
    text = annotation.replace(" ", "")
    if "Any" in text or not text:
        return None
    if isinstance(value, bool):
        fits = "bool" in text
    elif isinstance(value, (int, float)):
        fits = "float" in text or ("int" in text and isinstance(value, int))
    elif isinstance(value, str):
        fits = "str" in text
    elif isinstance(value, dict):
        fits = "Mapping" in text or "dict" in text
    elif isinstance(value, list):
        fits = "Sequence" in text or "list" in text or "tuple" in text
    else:
        fits = value is None and "None" in text
    return None if fits else f"expects {annotation}, got {json.dumps(value)}"


def check_method_options(name: str, options: dict[str, Any]) -> None:
    """Check ``--set`` keys and value types against method ``name``'s arguments.

    Raises:
        InputError: naming ``--set`` and the key, with the closest known key for a misspelt one.
    """
    known = method_options(name)
    for key, value in options.items():
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; {name} takes {', '.join(sorted(known))}"
            raise InputError("--set", f"{name} has no option {key!r}{hint}")
        problem = _type_problem(value, str(known[key].annotation))
        if problem:
            raise InputError("--set", f"{key} {problem}")


def _check_output(folder: Path, inputs: list[str | None]) -> None:
    if folder.exists() and not folder.is_dir():
        raise InputError(folder, "--output must be a folder, but this is a file")
    for given in (str(i) for i in inputs if i):
        # a domain folder, or the folder of a glob pattern; a single file or CSV may sit beside the run
        data = Path(given) if Path(given).is_dir() else Path(given).parent if any(c in given for c in "*?[") else None
        if data is not None and (folder.resolve() == data.resolve() or data.resolve() in folder.resolve().parents):
            raise InputError(folder, f"--output lies in the input folder {data}; training never writes among its data")
        if folder.resolve() == Path(given).resolve():
            raise InputError(folder, "--output is an input file")
    parent = folder if folder.exists() else folder.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise InputError(folder, f"--output cannot be created: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(folder, f"--output cannot be written: {parent} is not writable")


def run_train(args: argparse.Namespace) -> int:
    """Body of ``medtrans train``."""
    from medtrans.data import TrainStream
    from medtrans.engine import TranslationTrainer
    from medtrans.engine.checkpoint import latest_checkpoint, read_checkpoint
    from medtrans.errors import ModelError
    from medtrans.methods import build_method
    from medtrans.utils import seed_everything

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    _check_output(args.output, [args.data_a, args.data_b, args.masks_a, args.masks_b])
    if args.output.is_dir() and (found := latest_checkpoint(args.output)) is not None:
        read_checkpoint(found, args.method)  # a run of another method there cannot be resumed
    options = parse_assignments(args.set)
    check_method_options(args.method, options)
    patch = list(args.patch_size or defaults.PATCH_SIZE[args.dims])
    batch_size = args.batch_size or defaults.BATCH_SIZE[args.dims]
    validation = None
    if args.validate:
        bad = [v for v in args.validate if len(v) not in (2, 3)]
        if bad:
            raise InputError("--validate", f"expects A B [MASK], got {' '.join(bad[0])}")
        for path in (p for v in args.validate for p in v):
            if not Path(path).is_file() and not Path(path).is_dir():
                raise InputError(path, "--validate file does not exist")
        validation = {"pairs": [v + [None] * (3 - len(v)) for v in args.validate], "metric": "psnr"}
    seed_everything(args.seed)
    try:
        method = build_method(args.method, spatial_dims=args.dims, precision=args.precision, **options)
    except ModelError as err:
        raise InputError("--set", f"cannot build {args.method}'s networks: {err.problem}") from None
    except (TypeError, ValueError) as err:
        raise InputError("--set", f"{args.method}: {err}") from None
    try:
        method.check_patch(patch)
    except ValueError as err:
        raise InputError("--patch-size", f"{err}; use a larger --patch-size, or smaller networks with --set "
                                          "(e.g. 'discriminator={\"num_scales\": 1}')") from None
    data = TrainStream(args.data_a, args.data_b,
                       {"patch_size": patch, "sampler_type": args.sampler, "num_workers": args.workers,
                        "memory_gb": args.memory_gb},
                       batch_size=batch_size, masks_a=args.masks_a, masks_b=args.masks_b, paired=method.paired,
                       seed=args.seed)
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k not in ("run", "debug")}
    trainer = TranslationTrainer(
        method, data, args.output, iterations=args.iterations, checkpoint_interval=args.checkpoint_interval,
        device=args.device, tracking=args.tracking, log_interval=args.log_interval,
        montage_interval=args.montage_interval, validation=validation, config=config, progress=not args.no_progress,
    )
    trainer.run()
    trainer.export(args.output / "generator.pt")
    return 0
