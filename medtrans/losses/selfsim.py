"""Spatially-correlative loss of F/LSeSim (Zheng, Cham & Cai, CVPR 2021), for 2D and 3D feature maps."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch.nn.modules.loss import _Loss

__all__ = ["SpatialCorrelativeLoss", "patch_self_similarity"]

LOSS_TYPES = ("cos", "l1", "info")


def patch_self_similarity(
    features: torch.Tensor, patch_size: int, num_patches: int, patch_ids: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Self-similarity maps of sampled query locations with their local neighbourhood (F-LSeSim eq. 1), N-D.

    Features are centred per channel and L2-normalised over channels; for each query location ``i`` the map is the
    cosine similarity between ``f_i`` and every feature in the ``patch_size^D`` window around ``i`` (shifted to stay
    inside the map). Windows at least as large as the map become the whole map.

    Args:
        features: ``(B, C, *spatial)``.
        patch_size: window side.
        num_patches: query locations to draw (all when 0 or larger than the map).
        patch_ids: flat query indices to reuse (drawn at random when ``None``).

    Returns:
        ``(maps, patch_ids)`` with ``maps`` of shape ``(B, N, W)``, ``W`` the number of window voxels.
    """
    b, c, *spatial = features.shape
    f = features - features.mean(dim=tuple(range(2, features.ndim)), keepdim=True)
    f = F.normalize(f, dim=1).flatten(2)  # (B, C, S)
    total = f.shape[2]
    if patch_ids is None:
        patch_ids = torch.randperm(total, device=f.device)
        if 0 < num_patches < total:
            patch_ids = patch_ids[:num_patches]
    query = f[:, :, patch_ids]  # (B, C, N)
    if patch_size >= min(spatial):
        return torch.einsum("bcn,bcs->bns", query, f), patch_ids
    sizes = torch.tensor(spatial, device=f.device)
    coords = torch.stack(torch.unravel_index(patch_ids, tuple(spatial)), dim=1)  # (N, D)
    start = (coords - patch_size // 2).clamp(min=0)
    start = torch.minimum(start, sizes - patch_size)
    offsets = torch.tensor(list(itertools.product(range(patch_size), repeat=len(spatial))), device=f.device)  # (W, D)
    window = start[:, None, :] + offsets[None]  # (N, W, D)
    strides = torch.tensor([int(torch.prod(sizes[i + 1 :])) for i in range(len(spatial))], device=f.device)
    flat = (window * strides).sum(-1)  # (N, W)
    keys = f[:, :, flat]  # (B, C, N, W)
    return torch.einsum("bcn,bcnw->bnw", query, keys), patch_ids


class SpatialCorrelativeLoss(_Loss):
    """F/LSeSim structure loss between the self-similarity maps of the source's and the output's features.

    The same query locations are used for source and output; a loss of 0 means every sampled location relates to its
    neighbourhood in the output exactly as in the source, whatever the two domains' appearance.

    - ``"cos"`` (FSeSim, the reference default): ``1 − cos(map_s, map_o)`` per location.
    - ``"l1"`` (FSeSim): mean absolute difference of the maps.
    - ``"info"`` (LSeSim): InfoNCE over locations — the output's map at ``i`` must match the source's map at ``i``
      against the source's maps at other locations (temperature ``τ``); it is not 0 for identical inputs but lowest.

    Args:
        loss_type: ``"cos"``, ``"l1"`` or ``"info"``.
        patch_size: neighbourhood side (32 in the 2D reference code; use ~8 in 3D, where the window is ``8³``).
        num_patches: query locations per layer (256).
        temperature: ``τ`` of ``"info"`` (0.1 in the reference code).
        detach_source: stop gradients through the source's features (when training a generator); ``False`` when the
            feature extractor itself learns from the loss (LSeSim).

    Raises:
        ValueError: on an unknown ``loss_type``.
    """

    def __init__(
        self,
        loss_type: str = "cos",
        patch_size: int = 32,
        num_patches: int = 256,
        temperature: float = 0.1,
        detach_source: bool = True,
    ) -> None:
        super().__init__()
        self.detach_source = detach_source
        if loss_type not in LOSS_TYPES:
            raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")
        self.loss_type = loss_type
        self.patch_size = patch_size
        self.num_patches = num_patches
        self.temperature = temperature

    def _compare(self, map_s: torch.Tensor, map_o: torch.Tensor) -> torch.Tensor:
        if self.loss_type == "cos":
            return (1.0 - F.cosine_similarity(map_s, map_o, dim=-1)).mean()
        if self.loss_type == "l1":
            return (map_s - map_o).abs().mean()
        s = F.normalize(map_s, dim=-1)
        o = F.normalize(map_o, dim=-1)
        logits = torch.bmm(o, s.transpose(1, 2)) / self.temperature  # (B, N, N): output map i vs source map j
        target = torch.arange(logits.shape[1], device=logits.device).expand(logits.shape[0], -1)
        return F.cross_entropy(logits.flatten(0, 1), target.flatten())

    def forward(
        self, source_features: Sequence[torch.Tensor] | torch.Tensor, output_features: Sequence[torch.Tensor] | torch.Tensor
    ) -> torch.Tensor:
        """Args:
            source_features: feature maps of the source, one per layer (a single tensor is one layer).
            output_features: feature maps of the output from the same extractor.

        Returns:
            the loss averaged over layers.
        """
        if isinstance(source_features, torch.Tensor):
            source_features, output_features = [source_features], [output_features]
        if len(source_features) != len(output_features) or not source_features:
            raise ValueError("need the same (non-zero) number of source and output feature maps")
        losses = []
        for fs, fo in zip(source_features, output_features):
            if fs.shape != fo.shape:
                raise ValueError(f"source {tuple(fs.shape)} and output {tuple(fo.shape)} feature shapes differ")
            map_s, ids = patch_self_similarity(fs.detach() if self.detach_source else fs, self.patch_size, self.num_patches)
            map_o, _ = patch_self_similarity(fo, self.patch_size, self.num_patches, ids)
            losses.append(self._compare(map_s, map_o))
        return torch.stack(losses).mean()
