"""Data in: domain sources, intensity mappings, and per-domain torchio patch queues."""

from medtrans.data.intensity import AffineIntensity, fit_intensity, histogram_match, validate_spec
from medtrans.data.queues import (
    PatchBatches,
    Preprocessing,
    QueueConfig,
    domain_queue,
    make_subject,
    paired_subject,
    patch_spatial_dims,
)
from medtrans.data.sources import ImageRecord, list_domain, pair_domains

__all__ = [
    "AffineIntensity",
    "ImageRecord",
    "PatchBatches",
    "Preprocessing",
    "QueueConfig",
    "domain_queue",
    "fit_intensity",
    "histogram_match",
    "list_domain",
    "make_subject",
    "pair_domains",
    "paired_subject",
    "patch_spatial_dims",
    "validate_spec",
]
