"""Data in: domain sources, intensity mappings, and the in-memory training stream."""

from medtrans.data.intensity import (
    AffineIntensity,
    fit_intensity,
    histogram_match,
    histogram_match_batch,
    validate_spec,
)
from medtrans.data.sources import ImageRecord, list_domain, pair_domains
from medtrans.data.stream import PatchConfig, TrainStream, patch_spatial_dims

__all__ = [
    "AffineIntensity",
    "ImageRecord",
    "PatchConfig",
    "TrainStream",
    "fit_intensity",
    "histogram_match",
    "histogram_match_batch",
    "list_domain",
    "pair_domains",
    "patch_spatial_dims",
    "validate_spec",
]
