"""Translation methods: one file each, registered by name (see :mod:`medtrans.methods.base`)."""

from medtrans.methods.base import DivergenceError, TranslationMethod, build_method, method_class, method_names

__all__ = ["DivergenceError", "TranslationMethod", "build_method", "method_class", "method_names"]
