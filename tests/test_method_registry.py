"""Methods by name: one file each, listed without torch, built by name."""

from __future__ import annotations

import subprocess
import sys

import pytest

from medtrans.methods.base import TranslationMethod
from medtrans.registry import build_method, method_class, method_names
from tests.conftest import REPO


def test_each_method_file_holds_the_method_of_its_name():
    names = method_names()
    assert names == sorted(p.stem for p in (REPO / "medtrans" / "methods").glob("*.py")
                           if not p.stem.startswith("_") and p.stem != "base")
    for name in names:
        cls = method_class(name)
        assert issubclass(cls, TranslationMethod) and cls.name == name and cls.__module__ == f"medtrans.methods.{name}"


def test_listing_the_methods_imports_no_torch():
    script = "import sys\nfrom medtrans.registry import method_names\nprint(method_names())\nprint('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, encoding="utf-8", check=True)
    listed, torch_loaded = done.stdout.splitlines()
    assert listed == str(method_names()) and torch_loaded == "False"


def test_an_unknown_method_is_refused_naming_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown method 'cyclegann'; available: \['cut', "):
        build_method("cyclegann", spatial_dims=2)
