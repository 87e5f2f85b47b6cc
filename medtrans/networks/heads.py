"""The PatchNCE projection head of CUT (Park et al., ECCV 2020), for 2D and 3D feature maps."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["PatchSampleMLP"]


class PatchSampleMLP(nn.Module):
    """Samples the same locations in a list of N-D feature maps, projects them with an MLP and L2-normalises.

    Called on the source's features, it draws random locations and returns them; called on the output's features with
    those ``patch_ids``, it reads the same locations, so row ``i`` of both results is a positive pair for
    :class:`medtrans.losses.PatchNCELoss`.

    Args:
        in_channels: channels of each feature map, in order.
        num_features: width of the two-layer MLP (256 in CUT).
        use_mlp: project with the MLP (CUT) or only normalise the sampled features.
    """

    def __init__(self, in_channels: Sequence[int], num_features: int = 256, use_mlp: bool = True) -> None:
        super().__init__()
        self.in_channels = tuple(in_channels)
        self.use_mlp = use_mlp
        self.mlps = nn.ModuleList(
            nn.Sequential(nn.Linear(c, num_features), nn.ReLU(), nn.Linear(num_features, num_features))
            if use_mlp
            else nn.Identity()
            for c in self.in_channels
        )
        for m in self.modules():
            if isinstance(m, nn.Linear):  # N(0, 0.02), the reference default; CUT redraws it with its init_type
                nn.init.normal_(m.weight, 0.0, 0.02)
                nn.init.zeros_(m.bias)

    def forward(
        self,
        features: Sequence[torch.Tensor],
        num_patches: int = 256,
        patch_ids: Sequence[torch.Tensor] | None = None,
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Sample, project and normalise.

        Args:
            features: feature maps ``(B, C_l, *spatial_l)``, one per entry of ``in_channels``.
            num_patches: locations per map (capped by the map's size); 0 takes every location.
            patch_ids: flat location indices to reuse, one tensor per map; drawn at random when ``None``.

        Returns:
            ``(samples, patch_ids)``: ``samples[l]`` is ``(B * N_l, num_features)`` with unit rows, ordered batch-major;
            ``patch_ids[l]`` are the flat indices used.

        Raises:
            ValueError: if the number of maps or their channels do not match ``in_channels``.
        """
        if len(features) != len(self.in_channels):
            raise ValueError(f"expected {len(self.in_channels)} feature maps, got {len(features)}")
        samples, ids_out = [], []
        for level, (feat, mlp) in enumerate(zip(features, self.mlps)):
            if feat.shape[1] != self.in_channels[level]:
                raise ValueError(f"feature map {level} has {feat.shape[1]} channels, expected {self.in_channels[level]}")
            flat = feat.flatten(2).transpose(1, 2)  # (B, S, C)
            if patch_ids is not None:
                ids = patch_ids[level]
            elif num_patches > 0:
                ids = torch.randperm(flat.shape[1], device=feat.device)[: min(num_patches, flat.shape[1])]
            else:
                ids = torch.arange(flat.shape[1], device=feat.device)
            picked = flat[:, ids, :].flatten(0, 1)  # (B * N, C)
            samples.append(F.normalize(mlp(picked), dim=1, eps=1e-7))
            ids_out.append(ids)
        return samples, ids_out
