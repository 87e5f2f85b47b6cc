"""``medtrans translate``: the options mapped onto :func:`medtrans.inference.translate_path`."""

from __future__ import annotations

import os
from typing import Any

from medtrans.errors import InputError
from medtrans.inference import SETTINGS_2D, SETTINGS_3D, translate_path
from medtrans.io import check_input, read_volume
from medtrans.model import TranslationModel

__all__ = ["run_translate"]


def _target_spec(args: Any) -> dict[str, Any] | None:
    if args.target_intensity == "model":
        return None
    if args.target_intensity == "histogram":
        if args.reference is None:
            raise InputError("--reference", "--target-intensity histogram needs --reference FILE")
        read_volume(args.reference)
        return {"type": "histogram", "reference": str(args.reference)}
    if args.target_intensity == "window":
        if args.window is None:
            raise InputError("--window", "--target-intensity window needs --window LOW HIGH")
        return {"type": "window", "low": args.window[0], "high": args.window[1]}
    return {"type": "source"}


def run_translate(args: Any) -> int:
    """Body of ``medtrans translate``: paths first, then the model and its options, then the volumes."""
    given = {name: getattr(args, name) for name in (*SETTINGS_3D, *SETTINGS_2D, "device", "precision")
             if getattr(args, name) is not None}
    for path in (args.mask, args.reference, args.model, args.faithfulness_calibration):  # a FIFO or a device would block or never end: refused now
        if path is not None and os.path.lexists(path):
            check_input(path)

    def check_settings(model: TranslationModel) -> None:
        for name in SETTINGS_3D if model.spatial_dims == 2 else SETTINGS_2D:
            if name in given:
                raise InputError("--" + name.replace("_", "-"), f"applies to {5 - model.spatial_dims}D models only, "
                                 f"and {args.model} is a {model.spatial_dims}D model; leave it out")

    translate_path(args.input, args.output, args.model, args.faithfulness_map, args.mask, _target_spec(args),
                   args.faithfulness_eps, check_model=check_settings, progress=not args.no_progress,
                   faithfulness_report=args.faithfulness_report,
                   faithfulness_calibration=args.faithfulness_calibration, **given)
    return 0
