"""``medtrans train``: train any method on two domains from the command line (bundles offer the same via config).

Everything that can be checked without reading an image is checked first — the output folder, every ``--set`` option
against the method's own arguments, the networks against the patch size (on PyTorch's meta device) — so a
configuration that cannot work stops at once with one line naming the option to change.
"""

from __future__ import annotations

import argparse
import difflib
import glob
import inspect
import json
import logging
import os
from pathlib import Path
from typing import Any

from medtrans import defaults
from medtrans.commands.run_folder import removed_on_failure
from medtrans.errors import InputError, all_finite
from medtrans.io import check_outputs

__all__ = ["check_method_options", "check_validation_pairs", "method_options", "parse_assignments", "resume_conflict",
           "run_train"]

RESUME_SETTINGS = ("dims", "patch_size", "batch_size", "sampler", "seed", "intensity_a", "intensity_b", "augment_a",
                   "augment_b")
"""Settings a resumed run must share with its checkpoint (besides the method and its ``--set`` options): they shape
the networks, the batches or the intensities the translator learns. The rest (``--iterations``, intervals, ``--device``, ``--workers``...) may change."""


def parse_assignments(items: list[str]) -> dict[str, Any]:
    """``["lambda_ngf=10", 'generator={"channels": [16, 32]}']`` → ``{"lambda_ngf": 10, "generator": {...}}``.

    Values are JSON; a value that is not JSON is taken as a plain string, unless it starts like JSON (``{``, ``[``,
    ``"``), which is an error. Numbers must be finite: Python's JSON reader takes ``NaN``, ``Infinity`` and ``1e999``,
    and none of them is a usable option.

    Raises:
        InputError: naming ``--set``, for an item without ``=``, a broken JSON value, or a NaN or infinite number.
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
        if not all_finite(out[key]):
            raise InputError("--set", f"{key}: {value!r} holds a NaN or infinite number; options must be finite")
    return out


def method_options(name: str) -> dict[str, inspect.Parameter]:
    """The keyword options of method ``name``: its own constructor's and those of its base classes."""
    from medtrans.methods.base import TranslationMethod
    from medtrans.registry import method_class

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


def _plain(value: Any) -> Any:
    """``value`` with tuples as lists (JSON's view), so a stored ``[0.5, 0.999]`` equals a default ``(0.5, 0.999)``."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _show(value: Any) -> str:
    try:
        return json.dumps(_plain(value))
    except (TypeError, ValueError):
        return repr(value)


def _resolved(config: Any, key: str) -> Any:
    """A run setting as training used it (``--patch-size`` and ``--batch-size`` default per ``--dims``)."""
    dims = config.get("dims", 3)
    if key == "patch_size":
        return list(config.get("patch_size") or defaults.PATCH_SIZE.get(dims, ()))
    if key == "batch_size":
        return config.get("batch_size") or defaults.BATCH_SIZE.get(dims)
    if key.startswith("intensity_"):
        try:
            return intensity_spec(config.get(key), "--" + key.replace("_", "-"))
        except InputError:
            return config.get(key)
    return config.get(key)


def intensity_spec(text: str | None, option: str) -> dict[str, Any] | None:
    """A domain's intensity mapping from its JSON option (``None`` when not given: the default percentiles), checked
    and completed with its defaults.

    Raises:
        InputError: naming ``option``, for text that is not a JSON object or not a valid mapping.
    """
    if text is None:
        return None
    from medtrans.data.intensity import validate_spec

    try:
        spec = json.loads(text)
    except json.JSONDecodeError as err:
        raise InputError(option, f"{text!r} is not valid JSON ({err.msg} at character {err.pos})") from None
    if not isinstance(spec, dict) or not all_finite(spec):
        raise InputError(option, f"expected a JSON object of finite values such as "
                                 f"'{{\"type\": \"window\", \"low\": -1024, \"high\": 3000}}', got {text!r}")
    try:
        return validate_spec(spec)
    except (TypeError, ValueError) as err:
        raise InputError(option, str(err)) from None


def resume_conflict(stored: Any, args: argparse.Namespace, options: dict[str, Any]) -> str | None:
    """The first setting in which this run (``args`` and its parsed ``--set`` ``options``) differs from the config
    stored in the checkpoint it would resume, as ``"was trained with X=old, this run asks X=new"``; ``None`` when
    they agree (or the checkpoint stores no config to compare). Only :data:`RESUME_SETTINGS` and the method options
    count, each as training used it: an option left out equals it given with its default value."""
    if not isinstance(stored, dict) or not stored:
        return None
    new = vars(args)
    for key in RESUME_SETTINGS:
        if key in stored and _plain(_resolved(stored, key)) != _plain(_resolved(new, key)):
            return f"was trained with {key}={_show(_resolved(stored, key))}, this run asks {key}={_show(_resolved(new, key))}"
    if not isinstance(stored.get("set"), list):
        return None
    try:
        old = parse_assignments([str(item) for item in stored["set"]])
    except InputError:
        return None
    known = method_options(args.method)

    def effective(given: dict[str, Any], key: str) -> tuple[Any, str]:
        if key in given:
            return given[key], f"{key}={_show(given[key])}"
        default = known[key].default if key in known else None
        default = None if default is inspect.Parameter.empty else default
        return default, f"{key} unset (default {_show(default)})"

    for key in sorted(set(old) | set(options)):
        (was, was_text), (asks, asks_text) = effective(old, key), effective(options, key)
        if _plain(was) != _plain(asks):
            return f"was trained with --set {was_text}, this run asks --set {asks_text}"
    return None


def check_validation_pairs(pairs: list[list[Any]]) -> None:
    """Read every ``--validate`` pair ``[A, B, MASK or None]`` once before training: both readable volumes on one
    grid (shape and affine), the mask readable, not empty and on that grid — so a bad pair stops the run at once, not
    at its first checkpoint.

    Raises:
        InputError: naming the file.
    """
    import numpy as np

    from medtrans.io import read_mask, read_volume

    for a_path, b_path, mask_path in pairs:
        source, target = read_volume(a_path), read_volume(b_path)
        if target.data.shape != source.data.shape:
            raise InputError(b_path, f"--validate pair: grid {target.data.shape} differs from {a_path} "
                                     f"{source.data.shape}; a validation pair must lie on one grid")
        if not np.allclose(target.affine, source.affine, atol=1e-3):
            raise InputError(b_path, f"--validate pair: affine differs from {a_path}'s; a validation pair must lie on "
                                     "one grid")
        if mask_path:
            read_mask(mask_path, source)


RUN_FILES = ("generator.pt", "best_generator.pt", "checkpoint_*.pt", "montage_*.png", "mlflow.db")
"""What a run writes in its folder, besides the folder ``tensorboard/``."""


def _domain_paths(spec: str | None) -> list[Path]:
    """The files and folders a domain option reads: a folder, a file, a CSV and the files it lists, or a glob
    pattern's matches and the folder it searches (its path up to the first wildcard)."""
    from medtrans.data.sources import list_domain

    if not spec:
        return []
    text = str(spec)
    if any(c in text for c in "*?["):
        parts = Path(text).parts
        prefix = Path(*parts[: next(i for i, part in enumerate(parts) if any(c in part for c in "*?["))] or ".")
        return [prefix, *map(Path, glob.glob(text))]
    paths = [Path(text)]
    if text.lower().endswith(".csv"):
        try:
            paths += [p for r in list_domain(text) for p in (r.image, r.mask) if p is not None]
        except InputError:
            pass  # reported when the domain is read
    return paths


def _check_output(folder: Path, inputs: list[tuple[str | None, str]]) -> None:
    """Refuse a run folder that is a file, cannot be created, or would overwrite or lie among the inputs."""
    if folder.exists() and not folder.is_dir():
        raise InputError(folder, "--output must be a folder, but this is a file")
    check_outputs([(folder, "--output"), *((folder / name, "--output") for name in RUN_FILES)],
                  [(path, option) for given, option in inputs for path in _domain_paths(given)],
                  folders=[(folder / "tensorboard", "--output")])
    parent = folder if folder.exists() else folder.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise InputError(folder, f"--output cannot be created: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(folder, f"--output cannot be written: {parent} is not writable")


def run_train(args: argparse.Namespace) -> int:
    """Body of ``medtrans train``. A run that fails or is interrupted before it saved a checkpoint leaves nothing it
    created: not its run folder (nor the parents it made), not the files it began in an existing one. Launched by
    torchrun, every process joins the process group (NCCL on GPUs, gloo on CPU) and trains on its own share of the
    data; rank 0 alone writes and cleans up."""
    from medtrans.distributed import process_group_from_environment

    with removed_on_failure(args.output, enabled=os.environ.get("RANK", "0") == "0"), process_group_from_environment():
        return _train(args)


def _train(args: argparse.Namespace) -> int:
    from medtrans.data import TrainStream
    from medtrans.distributed import rank_and_world
    from medtrans.engine import TranslationTrainer
    from medtrans.engine.checkpoint import latest_checkpoint, read_checkpoint
    from medtrans.errors import ModelError
    from medtrans.methods import build_method
    from medtrans.utils import resolve_device, seed_everything

    rank, world = rank_and_world()
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s{f' [rank {rank}]' if world > 1 else ''} %(name)s %(message)s")
    _check_output(args.output, [(args.data_a, "--data-a"), (args.data_b, "--data-b"), (args.masks_a, "--masks-a"),
                                (args.masks_b, "--masks-b"), *((p, "--validate") for v in args.validate or () for p in v)])
    device = resolve_device(args.device)  # e.g. cuda:N for an N that torch does not see: refused before any reading
    if device.index is not None and world > 1:
        raise InputError("--device", f"{args.device} under torchrun: each process uses its own GPU (LOCAL_RANK); "
                                     "give --device auto or cuda")
    options = parse_assignments(args.set)
    check_method_options(args.method, options)
    intensities = {d: intensity_spec(getattr(args, f"intensity_{d}"), f"--intensity-{d}") for d in ("a", "b")}
    if given := {d: text for d in ("a", "b") if (text := getattr(args, f"augment_{d}")) is not None}:
        from medtrans.data.augment import (
            parse_augment,  # torchio is imported for augmented runs only
        )
    augments = {f"transform_{d}": parse_augment(text, f"--augment-{d}") for d, text in given.items()}
    if args.output.is_dir() and (found := latest_checkpoint(args.output)) is not None:
        state = read_checkpoint(found, args.method)  # a run of another method there cannot be resumed
        conflict = resume_conflict(state.get("config"), args, options)
        if conflict:
            raise InputError(found, f"{conflict}; use another --output or the same settings")
        del state
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
        check_validation_pairs(validation["pairs"])
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
                        "memory_gb": args.memory_gb, "storage": args.storage, "cache_dir": args.cache_dir},
                       batch_size=batch_size, masks_a=args.masks_a, masks_b=args.masks_b, paired=method.paired,
                       seed=args.seed, **augments, **{f"preprocessing_{d}": {"intensity": spec}
                                                      for d, spec in intensities.items() if spec is not None})
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k not in ("run", "debug")}
    trainer = TranslationTrainer(
        method, data, args.output, iterations=args.iterations, checkpoint_interval=args.checkpoint_interval,
        device=args.device, tracking=args.tracking, log_interval=args.log_interval,
        montage_interval=args.montage_interval, validation=validation, config=config, progress=not args.no_progress,
    )
    trainer.run()
    trainer.export(args.output / "generator.pt")
    return 0
