"""Translation methods: one file each, found by name through :mod:`medtrans.registry`."""

from medtrans.errors import DivergenceError
from medtrans.methods.base import TranslationMethod
from medtrans.registry import build_method, method_class, method_names

__all__ = ["DivergenceError", "TranslationMethod", "build_method", "method_class", "method_names"]
