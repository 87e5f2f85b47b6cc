"""Whole-volume translation: file → canonical grid → intensity mapping → network → back to the input's geometry
(:mod:`medtrans.inference.translator`), for files and folders (:mod:`medtrans.inference.files`)."""

from medtrans.inference.files import list_inputs, translate_path
from medtrans.inference.translator import (
    BACKGROUND,
    SETTINGS_2D,
    SETTINGS_3D,
    InferenceSettings,
    Translation,
    Translator,
    faithfulness_paths,
    gaussian_weights,
)

__all__ = ["BACKGROUND", "SETTINGS_2D", "SETTINGS_3D", "InferenceSettings", "Translation", "Translator",
           "faithfulness_paths", "gaussian_weights", "list_inputs", "translate_path"]
