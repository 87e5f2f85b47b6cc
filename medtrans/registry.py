"""The methods by name: one file of ``medtrans/methods/`` each, found without importing torch.

A method's name is its file's name (``medtrans/methods/cut.py`` holds ``name = "cut"``); files whose names start
with ``_`` and ``base.py`` hold what the methods share. Listing the names reads the folder only, so ``medtrans
--help`` answers at once; asking for a class imports that one file.
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from medtrans.methods.base import TranslationMethod

__all__ = ["build_method", "method_class", "method_names"]

PACKAGE = "medtrans.methods"


def method_names() -> list[str]:
    """The names of every method, one per file of ``medtrans/methods/``."""
    spec = importlib.util.find_spec(PACKAGE)
    folder = Path(next(iter(spec.submodule_search_locations)))
    return sorted(p.stem for p in folder.glob("*.py") if not p.stem.startswith("_") and p.stem != "base")


def method_class(name: str) -> type[TranslationMethod]:
    """The class of method ``name``: the class of ``medtrans/methods/<name>.py`` whose ``name`` it is.

    Raises:
        ValueError: on an unknown name.
    """
    if name not in method_names():
        raise ValueError(f"unknown method {name!r}; available: {method_names()}")
    module = importlib.import_module(f"{PACKAGE}.{name}")
    found = [c for c in vars(module).values() if isinstance(c, type) and getattr(c, "name", None) == name
             and c.__module__ == module.__name__]
    if len(found) != 1:
        raise TypeError(f"{module.__file__} must define exactly one class with name = {name!r}, found {len(found)}")
    return found[0]


def build_method(name: str, **kwargs: Any) -> TranslationMethod:
    """Instantiate a method by name (``build_method("cyclegan", spatial_dims=3, ...)``).

    Raises:
        ValueError: on an unknown name.
    """
    return method_class(name)(**kwargs)
