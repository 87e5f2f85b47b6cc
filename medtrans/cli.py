"""The ``medtrans`` command line: one sub-command per job (translate, train, evaluate, ...)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import medtrans
from medtrans.errors import MedtransError

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser; each job module adds its sub-command."""
    parser = argparse.ArgumentParser(prog="medtrans", description=medtrans.__doc__)
    parser.add_argument("--version", action="version", version=f"medtrans {medtrans.__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in _command_modules():
        module.register(subparsers)
    return parser


def _command_modules() -> list:
    from medtrans import demo, evaluate, inference
    from medtrans.engine import command

    return [demo, command, inference, evaluate]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``medtrans`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except MedtransError as err:
        print(f"medtrans {args.command}: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
