"""PatchNCE: CUT's multi-layer patch-wise InfoNCE loss (Park et al., ECCV 2020), for 2D and 3D features."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch.nn.modules.loss import _Loss

__all__ = ["PatchNCELoss"]

NEGATIVES_TYPES = ("image", "batch")


class PatchNCELoss(_Loss):
    """Multi-layer PatchNCE (CUT, eq. 3 and the ``PatchNCELoss`` of the reference code).

    For each layer, row ``i`` of the output's projected patches ``q`` must pick row ``i`` of the source's ``k`` (the
    patch at the same location) among the other sampled source patches:
    ``ℓ = −log exp(q·k⁺/τ) / (exp(q·k⁺/τ) + Σ_{k⁻} exp(q·k⁻/τ))``, averaged over patches, then over layers. Inputs come
    from :class:`medtrans.networks.PatchSampleMLP` (unit rows, batch-major), so the loss is the same in 2D and 3D.

    Args:
        temperature: ``τ`` (0.07 in CUT).
        negatives_type: ``"image"`` draws negatives from the same image (CUT default), ``"batch"`` from the whole batch.

    Raises:
        ValueError: on an unknown ``negatives_type`` or mismatched inputs.
    """

    def __init__(self, temperature: float = 0.07, negatives_type: str = "image") -> None:
        super().__init__()
        if negatives_type not in NEGATIVES_TYPES:
            raise ValueError(f"negatives_type must be one of {NEGATIVES_TYPES}, got {negatives_type!r}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = temperature
        self.negatives_type = negatives_type

    def layer_loss(self, feat_q: torch.Tensor, feat_k: torch.Tensor, batch_size: int) -> torch.Tensor:
        """PatchNCE of one layer: ``feat_q, feat_k`` are ``(B·N, C)``; ``feat_k`` (the source) is not back-propagated."""
        if feat_q.shape != feat_k.shape:
            raise ValueError(f"query {tuple(feat_q.shape)} and key {tuple(feat_k.shape)} shapes differ")
        if feat_q.shape[0] % batch_size:
            raise ValueError(f"{feat_q.shape[0]} rows cannot be split into batch_size={batch_size} images")
        feat_k = feat_k.detach()
        dim = feat_q.shape[1]
        l_pos = (feat_q * feat_k).sum(dim=1, keepdim=True)  # (B·N, 1)
        groups = 1 if self.negatives_type == "batch" else batch_size
        q = feat_q.reshape(groups, -1, dim)
        k = feat_k.reshape(groups, -1, dim)
        l_neg = torch.bmm(q, k.transpose(1, 2))  # (groups, N, N)
        n = q.shape[1]
        eye = torch.eye(n, dtype=torch.bool, device=q.device)[None]
        l_neg = l_neg.masked_fill(eye, -10.0).reshape(-1, n)  # the positive is not its own negative
        logits = torch.cat([l_pos, l_neg], dim=1) / self.temperature
        target = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
        return F.cross_entropy(logits, target)

    def forward(
        self,
        feats_q: Sequence[torch.Tensor] | torch.Tensor,
        feats_k: Sequence[torch.Tensor] | torch.Tensor,
        batch_size: int = 1,
    ) -> torch.Tensor:
        """Args:
            feats_q: projected patches of the output ``G(x)``, one ``(B·N_l, C)`` tensor per layer.
            feats_k: projected patches of the source ``x`` at the same locations.
            batch_size: ``B``.

        Returns:
            the PatchNCE loss averaged over layers.
        """
        if isinstance(feats_q, torch.Tensor):
            feats_q, feats_k = [feats_q], [feats_k]
        if len(feats_q) != len(feats_k) or not feats_q:
            raise ValueError(f"need as many query as key layers (> 0), got {len(feats_q)} and {len(feats_k)}")
        return torch.stack([self.layer_loss(q, k, batch_size) for q, k in zip(feats_q, feats_k)]).mean()
