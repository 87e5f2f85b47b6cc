"""Helpers the MONAI bundles (``bundles/``) call from their configs.

A bundle's config files are code (MONAI evaluates their ``$`` expressions); its trained ``models/model.pt`` is data,
read only through :func:`medtrans.model.load_model`, which never runs code from it. The inference config goes through
:func:`load_network` and :func:`translate`, so a bad model or input ends ``python -m monai.bundle`` with one line
naming the file and exit status 1, as the ``medtrans`` commands do.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from torch import nn

from medtrans.errors import MedtransError

__all__ = ["bundle_path", "load_network", "translate"]


def bundle_path(bundle_root: str | Path | None, *parts: str) -> str:
    """``bundle_root/part/...``: where a bundle keeps its runs, model and outputs.

    Raises:
        ValueError: when ``bundle_root`` is not set: MONAI runs a config from any folder, so a bundle must be told
            where it lives, or it would write into the current folder.
    """
    if not bundle_root:
        raise ValueError("bundle_root is not set: add --bundle_root <the bundle's folder, e.g. bundles/nec> (it holds "
                         "runs/, models/ and eval/)")
    root = Path(bundle_root)
    if not (root / "configs").is_dir():
        raise ValueError(f"bundle_root {root} is not a bundle folder (it has no configs/)")
    return str(root.joinpath(*parts))


@contextlib.contextmanager
def _one_line_errors() -> Iterator[None]:
    """A medtrans error ends the process with its one line and exit status 1 (``SystemExit`` passes through MONAI's
    expression evaluation, which wraps every ``Exception`` into a traceback)."""
    try:
        yield
    except MedtransError as err:
        print(f"medtrans bundle: error: {err}", file=sys.stderr)
        raise SystemExit(1) from None


def load_network(model_file: str | Path) -> nn.Module:
    """The A→B generator of a trained bundle's ``models/model.pt`` (``network_def`` for ``ckpt_export``)."""
    from medtrans.model import load_model

    with _one_line_errors():
        return load_model(model_file).network


def translate(input_path: str | Path, output_path: str | Path, model_file: str | Path, **settings: Any) -> list[Path]:
    """:func:`medtrans.inference.translate_path` for the inference config."""
    from medtrans.inference import translate_path

    with _one_line_errors():
        return translate_path(input_path, output_path, model_file, **settings)
