"""Exceptions with one clear message naming the file and the problem."""

from __future__ import annotations

import math
from pathlib import Path

__all__ = ["DivergenceError", "InputError", "MedtransError", "ModelError", "Terminated", "all_finite"]


class MedtransError(Exception):
    """Base of medtrans's user-facing errors; the CLI prints the message and exits non-zero."""


class InputError(MedtransError, ValueError):
    """A bad input file or folder: ``InputError(path, problem)`` reads ``"<path>: <problem>"``."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


class ModelError(MedtransError, ValueError):
    """A checkpoint or bundle that cannot serve as a translator: missing, another architecture, wrong channels."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


class DivergenceError(MedtransError, RuntimeError):
    """A loss became NaN or infinite in training; raised before it could touch the weights.

    The command line reports it in one line; it stays a ``RuntimeError`` for code that catches those."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread by ``medtrans``'s command line so that every clean-up that runs for Ctrl-C
    (temporaries removed, half-written outputs rolled back) runs for it too."""


def all_finite(value: object) -> bool:
    """Whether every number in a JSON value (nested lists and dicts included) is finite: options parsed from the
    command line are refused with an :class:`InputError` otherwise."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(all_finite(v) for v in value.values())
    if isinstance(value, list):
        return all(all_finite(v) for v in value)
    return True

