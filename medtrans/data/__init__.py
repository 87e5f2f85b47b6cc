"""Data in: domain sources, intensity mappings, and the in-memory training stream."""

from medtrans.data.intensity import AffineIntensity, fit_intensity, histogram_match, validate_spec
from medtrans.data.sources import ImageRecord, list_domain, pair_domains
from medtrans.data.stream import PatchConfig, TrainStream, patch_spatial_dims

__all__ = [
    "AffineIntensity",
    "ImageRecord",
    "PatchConfig",
    "TrainStream",
    "fit_intensity",
    "histogram_match",
    "list_domain",
    "pair_domains",
    "patch_spatial_dims",
    "validate_spec",
]
