"""``medtrans evaluate``: the options mapped onto a scoring protocol, the table printed and optionally saved."""

from __future__ import annotations

from typing import Any

import pandas as pd

from medtrans.defaults import HU_RANGE
from medtrans.errors import InputError
from medtrans.evaluate import EvaluationProtocol, describe, evaluate_paths, summarize
from medtrans.io import atomic_write_many, check_outputs, check_writable
from medtrans.synthrad import SynthradProtocol

__all__ = ["run_evaluate"]

_SETS = {"nec": "--normalization each --histogram-match --sigma-mm 0.5 (percentiles 1 99)",
         "synthrad": "HU, clipped to --hu-range for PSNR and MS-SSIM; no normalisation, smoothing or matching"}
"""What each named protocol fixes, for the line refusing an option it fixes."""


def _protocol(args: Any) -> EvaluationProtocol | SynthradProtocol:
    """The protocol the options ask for; an option a named protocol fixes itself, or one that belongs to another
    protocol, is refused naming it (never silently ignored)."""
    tuning = {"--normalization": args.normalization, "--percentiles": args.percentiles,
              "--data-range": args.data_range, "--histogram-match": args.histogram_match or None,
              "--sigma-mm": args.sigma_mm}
    hu_range = getattr(args, "hu_range", None)
    if args.protocol in _SETS:
        given = next((option for option, value in tuning.items() if value is not None), None)
        if given is not None:
            raise InputError(given, f"cannot be combined with --protocol {args.protocol}, which fixes its own "
                                    f"settings ({_SETS[args.protocol]}); leave {given} out")
    if hu_range is not None and args.protocol != "synthrad":
        raise InputError("--hu-range", f"applies to --protocol synthrad only, not --protocol {args.protocol}")
    if args.protocol == "synthrad":
        try:
            return SynthradProtocol(*(hu_range or HU_RANGE))
        except ValueError as err:
            raise InputError("--hu-range", str(err)) from None
    if args.protocol == "nec":
        return EvaluationProtocol.nec()
    try:
        return EvaluationProtocol(args.normalization or "target", *(args.percentiles or (1.0, 99.0)), args.data_range,
                                  args.histogram_match, args.sigma_mm or 0.0)
    except ValueError as err:
        raise InputError("--normalization", str(err)) from err


def run_evaluate(args: Any) -> int:
    """Body of ``medtrans evaluate``."""
    protocol = _protocol(args)
    outputs = []
    if args.csv is not None:
        outputs = [args.csv, args.csv.with_name(args.csv.stem + "_summary.csv")]
        check_outputs([(path, "--csv") for path in outputs],
                      [(args.prediction, "PREDICTION"), (args.target, "TARGET"), (args.mask, "--mask")])
        for path in outputs:
            check_writable(path)
    table = evaluate_paths(args.prediction, args.target, args.mask, protocol)
    summary = summarize(table)
    with pd.option_context("display.float_format", "{:.4f}".format, "display.width", 120):
        print(table.to_string(index=False))
    print(f"\nprotocol ({args.protocol}): {describe(protocol, args.mask is not None)}")
    if len(table) > 1:
        print(f"mean ± std over {len(table)} subjects:")
        for metric, row in summary.iterrows():
            print(f"  {metric:7s} {row['mean']:.4f} ± {row['std']:.4f}")
    if outputs:  # the table and its summary: both or neither
        atomic_write_many([(outputs[0], lambda tmp: table.to_csv(tmp, index=False)),
                           (outputs[1], lambda tmp: summary.to_csv(tmp, index_label="metric"))])
    return 0
