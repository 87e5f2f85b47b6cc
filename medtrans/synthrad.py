"""Scoring synthetic CTs in HU the way the SynthRAD challenges do: MAE in HU inside a (dilated) body mask, PSNR
over a fixed HU range and MS-SSIM, with the body mask made from the CT when none is given."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from medtrans.defaults import BODY_DILATION_MM, BODY_THRESHOLD_HU, HU_RANGE
from medtrans.errors import InputError
from medtrans.io import Volume, check_same_grid
from medtrans.metrics import MS_SSIM_WEIGHTS, mae, ms_ssim, psnr

__all__ = ["SYNTHRAD_METRICS", "SynthradProtocol", "body_mask", "evaluate_synthrad_pair"]

SYNTHRAD_METRICS = ("mae", "psnr", "ms_ssim")
"""The columns of ``--protocol synthrad``, named as the SynthRAD challenges name them."""

HU_MIN_SPAN = 500.0
"""A volume whose values span less than this many HU (max − min) is refused as not a CT in HU: a prediction left in
the network's [-1, 1], or scaled to [0, 1] or [0, 255]. A CT spans air near -1000 HU to bone above +300."""
MS_SSIM_KERNEL = 11
"""MS-SSIM's Gaussian window side (σ 1.5; Wang et al. 2003, MONAI's ``MultiScaleSSIMMetric``)."""
MS_SSIM_SIGMA = 1.5


@dataclass(frozen=True)
class SynthradProtocol:
    """How synthetic CTs are scored in HU, the SynthRAD way (see :func:`evaluate_synthrad_pair`).

    Attributes:
        low: lower end of the HU range PSNR and MS-SSIM clip both volumes to.
        high: upper end; ``high - low`` is PSNR's data range.
        body_threshold: HU above which a target voxel is body, for the mask made when none is given.
        body_dilation_mm: that mask's dilation in mm.
        ms_ssim_kernel: MS-SSIM's window side (Gaussian, σ :data:`MS_SSIM_SIGMA`).
    """

    low: float = HU_RANGE[0]
    high: float = HU_RANGE[1]
    body_threshold: float = BODY_THRESHOLD_HU
    body_dilation_mm: float = BODY_DILATION_MM
    ms_ssim_kernel: int = MS_SSIM_KERNEL

    def __post_init__(self) -> None:
        if not (math.isfinite(self.low) and math.isfinite(self.high) and self.low < self.high):
            raise ValueError(f"the HU range needs finite LOW < HIGH, got {self.low:g}, {self.high:g}")
        if not self.low < self.body_threshold < self.high:
            raise ValueError(f"the body threshold {self.body_threshold:g} HU must lie inside the HU range "
                             f"[{self.low:g}, {self.high:g}]")
        if not (math.isfinite(self.body_dilation_mm) and self.body_dilation_mm >= 0):
            raise ValueError(f"body_dilation_mm must be a finite number >= 0, got {self.body_dilation_mm:g}")

    @property
    def data_range(self) -> float:
        return self.high - self.low

    def describe(self, masked: bool) -> str:
        """One line stating how scores were computed (printed with them)."""
        where = ("inside the mask" if masked else
                 f"inside the body mask made from the target (> {self.body_threshold:g} HU, largest component, "
                 f"holes filled, dilated {self.body_dilation_mm:g} mm)")
        return (f"MAE in HU; PSNR with data range {self.data_range:g} and MS-SSIM ({len(MS_SSIM_WEIGHTS)} scales, "
                f"Gaussian window {self.ms_ssim_kernel}, sigma {MS_SSIM_SIGMA:g}; {self.low:g} HU outside the "
                f"mask) of both clipped to [{self.low:g}, {self.high:g}] HU; {where}")


def body_mask(ct: np.ndarray, spacing: tuple[float, ...] = (1.0, 1.0, 1.0), axial: int = 2,
              threshold: float = BODY_THRESHOLD_HU, dilation_mm: float = BODY_DILATION_MM) -> np.ndarray:
    """The body in a CT (HU): voxels above ``threshold``, their largest connected component (face-connected: the
    couch and anything else the body does not touch fall away), holes filled in 3D and in every slice across
    ``axial`` (air in the airways, sinuses and bowel, open to the outside in 3D, closed within a slice), dilated by
    ``dilation_mm`` (an ellipsoid in mm, from the exact distance to the body, so anisotropic voxels dilate alike).

    Raises:
        ValueError: when no voxel lies above ``threshold`` (no body), or the body fills the whole volume (no air
            around it to tell it from: a CT cropped to the body, or a volume that is not in HU).
    """
    above = np.asarray(ct) > threshold
    if not above.any():
        raise ValueError(f"no voxel lies above {threshold:g} HU: no body to make a mask of")
    labels, count = ndimage.label(above)
    body = labels == (np.argmax(np.bincount(labels.ravel())[1:]) + 1) if count > 1 else above
    body = ndimage.binary_fill_holes(body)
    for i in range(body.shape[axial]):
        index = [slice(None)] * body.ndim
        index[axial] = i
        body[tuple(index)] = ndimage.binary_fill_holes(body[tuple(index)])
    if body.all():
        raise ValueError(f"the body fills the whole volume: no air around the body (at or below {threshold:g} HU) to "
                         "tell it from (a CT cropped to the body, or a volume not in HU)")
    if dilation_mm > 0:
        body = ndimage.distance_transform_edt(~body, sampling=spacing) <= dilation_mm
    return body


def _check_hu(volume: Volume, role: str) -> None:
    low, high = float(volume.data.min()), float(volume.data.max())
    if high - low < HU_MIN_SPAN:
        raise InputError(volume.path, f"spans only {low:g} to {high:g}: not a CT in HU (a CT spans air near -1000 HU "
                                      f"to bone above +300), which --protocol synthrad scores; "
                                      + ("was it mapped back to HU (medtrans translate does so for a model trained "
                                         "with a 'window' intensity for CT)?" if role == "prediction" else
                                         "give the CT as TARGET"))


def evaluate_synthrad_pair(pred: Volume, target: Volume, mask: Volume | None = None,
                           protocol: SynthradProtocol | None = None) -> dict[str, float]:
    """Score a synthetic CT against its CT, in HU, the SynthRAD way.

    Inside the mask (``mask > 0``; without one, :func:`body_mask` of the target): ``mae``, the mean absolute error
    in HU, of the volumes as they are (as SynthRAD's code takes it: a 5000 HU prediction in 1000 HU bone is 4000 HU
    off); and of both volumes clipped to ``[protocol.low, protocol.high]`` HU, ``psnr`` = 10 log10(range² / MSE) with
    range ``high − low`` (4024), and ``ms_ssim`` (:func:`~medtrans.metrics.ms_ssim`: 5 scales, Gaussian window 11,
    σ 1.5) of the clipped volumes set to ``low`` outside the mask and mapped to [0, 1] (data range 1), its maps
    averaged inside the mask at every scale.

    Raises:
        InputError: when the grids differ, the mask is empty, a volume does not look like a CT in HU (values spanning
            less than :data:`HU_MIN_SPAN`), or the target has no body, or no air around it, to make a mask from.
    """
    protocol = protocol or SynthradProtocol()
    check_same_grid(pred, target, mask)
    _check_hu(target, "target")
    _check_hu(pred, "prediction")
    if mask is not None:
        m = mask.data > 0
        if not m.any():
            raise InputError(mask.path, "mask is empty")
    else:
        try:
            m = body_mask(target.data, target.spacing, target.axial_axis, protocol.body_threshold,
                          protocol.body_dilation_mm)
        except ValueError as err:
            raise InputError(target.path, f"{err}; give the body mask with --mask") from None
    low, high = protocol.low, protocol.high
    raw_p, raw_t = pred.data.astype(np.float64), target.data.astype(np.float64)
    p, t = np.clip(raw_p, low, high), np.clip(raw_t, low, high)
    unit = lambda x: np.where(m, (x - low) / (high - low), 0.0)  # noqa: E731 - low HU outside the mask, in both
    return {
        "mae": mae(raw_p, raw_t, m),
        "psnr": psnr(p, t, protocol.data_range, m),
        "ms_ssim": ms_ssim(unit(p), unit(t), 1.0, m, protocol.ms_ssim_kernel, MS_SSIM_SIGMA, MS_SSIM_WEIGHTS),
    }
