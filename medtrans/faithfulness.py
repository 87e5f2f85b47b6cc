"""Per-voxel structural faithfulness of a translation: NGF alignment, split into invented and erased structure.

With ``n_s = n_ε(source)`` and ``n_o = n_ε(output)`` (normalised gradient fields, :func:`~medtrans.losses.ngf.normalized_gradient_field`):

- ``ngf = 1 − ½⟨n_s, n_o⟩²``: the NEC loss term. Near ½ where both images have aligned edges, 1 on flat regions
  *and* wherever the two disagree — it cannot tell an invented edge from a flat region, because a source with no edge
  there makes ``n_s ≈ 0``.
- ``invented = ‖n_o‖² − ⟨n_s, n_o⟩² / max(‖n_s‖², ‖n_o‖²)``: the output's edge energy that the source's edge does
  not explain, in direction (the part of ``n_o`` across ``n_s``) or in strength (an aligned output edge stronger
  than the source's). In [0, 1); 0 wherever the output is ``±source + b``.
- ``erased = ‖n_s‖² − ⟨n_s, n_o⟩² / max(‖n_s‖², ‖n_o‖²)``: the same for a source edge missing from the output.

(The plain Cauchy–Schwarz gaps ``‖n_o‖² − ⟨n_s, n_o⟩²`` are not 0 for a perfect translation, since ``‖n_ε‖ < 1``:
they equal ``‖n‖²(1 − ‖n‖²)``, up to ¼, on the source's own edges.) Both split maps ignore edge polarity, so a
contrast inversion is faithful. Real contrast pairs are far from 0 — T2 shows CSF and lesion edges T1 lacks — so read
the maps relative to a real pair of the same contrasts, as a visual aid with documented limits, not a detector. See
docs/inference.md.
"""

from __future__ import annotations

from pathlib import Path

import torch

from medtrans.defaults import FAITHFULNESS_EPS
from medtrans.errors import InputError
from medtrans.losses.ngf import normalized_gradient_field

__all__ = ["faithfulness_maps", "faithfulness_paths"]


def faithfulness_maps(source: torch.Tensor, output: torch.Tensor, eps: float = FAITHFULNESS_EPS) -> dict[str, torch.Tensor]:
    """The three maps for ``(B, 1, *spatial)`` source and output in the same normalised range ([-1, 1]).

    Args:
        source: the translation's input.
        output: the translation.
        eps: ``ε`` of ``n_ε`` in intensity units per voxel (0.15 on [-1, 1], NEC's training value).

    Returns:
        ``{"ngf", "invented", "erased"}``, each ``(B, 1, *spatial)``.
    """
    if source.shape != output.shape:
        raise ValueError(f"source {tuple(source.shape)} and output {tuple(output.shape)} shapes differ")
    n_s = normalized_gradient_field(source.float(), eps)
    n_o = normalized_gradient_field(output.float(), eps)
    inner2 = (n_s * n_o).sum(dim=2) ** 2
    s2 = (n_s * n_s).sum(dim=2)
    o2 = (n_o * n_o).sum(dim=2)
    explained = inner2 / torch.maximum(s2, o2).clamp(min=1e-12)
    return {
        "ngf": 1.0 - 0.5 * inner2,
        "invented": (o2 - explained).clamp(min=0),
        "erased": (s2 - explained).clamp(min=0),
    }


def faithfulness_paths(path: str | Path) -> dict[str, Path]:
    """``PATH`` holds the NGF map; ``<stem>_invented`` and ``<stem>_erased`` sit beside it."""
    path = Path(path)
    name = path.name
    suffix = ".nii.gz" if name.lower().endswith(".nii.gz") else (".nii" if name.lower().endswith(".nii") else "")
    if not suffix:
        raise InputError(path, "faithfulness map must be a .nii or .nii.gz file name")
    stem = name[: -len(suffix)]
    return {
        "ngf": path,
        "invented": path.with_name(f"{stem}_invented{suffix}"),
        "erased": path.with_name(f"{stem}_erased{suffix}"),
    }
