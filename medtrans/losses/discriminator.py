"""Remedies for a discriminator that memorises a small training set, in 2D and 3D.

- :func:`diff_augment`: differentiable augmentation (Zhao et al., NeurIPS 2020), applied to every image a
  discriminator sees, real and translated, in its own update and in the generator's. Only the geometric policies
  (``translation``, ``cutout``): the colour policies change intensities, which is what a translation is judged on.
- :func:`r1_penalty`: the R1 gradient penalty on real images (Mescheder et al., ICML 2018),
  ``γ/2 · E‖∇D(x_real)‖²``.
- :func:`instance_noise`: Gaussian noise added to every discriminator input (Sønderby et al., ICLR 2017), annealed
  to 0 over the run.

Spectral normalisation is a discriminator option (``discriminator={"spectral_norm": true}``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

__all__ = ["AUGMENT_POLICIES", "diff_augment", "instance_noise", "r1_penalty"]

AUGMENT_POLICIES = ("translation", "cutout")


def diff_augment(x: torch.Tensor, policies: Sequence[str], translation_ratio: float = 0.125,
                 cutout_ratio: float = 0.5, background: float = -1.0) -> torch.Tensor:
    """``x`` ``(B, C, *spatial)`` with each sample shifted and/or cut out at random, differentiably.

    Args:
        x: the images.
        policies: any of :data:`AUGMENT_POLICIES`, applied in this order.
        translation_ratio: the largest shift per axis, as a fraction of that side; uncovered voxels take
            ``background``.
        cutout_ratio: the side of the box set to 0 (mid-range), as a fraction of each side; its centre is uniform.
        background: the value shifted-in voxels take.

    Raises:
        ValueError: on an unknown policy.
    """
    unknown = [p for p in policies if p not in AUGMENT_POLICIES]
    if unknown:
        raise ValueError(f"unknown augmentation {unknown[0]!r}; choose from {AUGMENT_POLICIES}")
    spatial = x.shape[2:]
    for policy in policies:
        if policy == "translation":
            reach = [max(1, int(s * translation_ratio)) for s in spatial]
            padded = F.pad(x, [r for r in reversed(reach) for _ in range(2)], value=background)
            shifts = [torch.randint(0, 2 * r + 1, (x.shape[0],)).tolist() for r in reach]
            x = torch.stack([padded[(i, slice(None), *(slice(d[i], d[i] + s) for d, s in zip(shifts, spatial)))]
                             for i in range(x.shape[0])])
        else:
            sides = [max(1, int(s * cutout_ratio)) for s in spatial]
            mask = torch.ones_like(x[:, :1])
            for i in range(x.shape[0]):
                centre = [int(torch.randint(0, s, ())) for s in spatial]
                box = tuple(slice(max(0, c - h // 2), c - h // 2 + h) for c, h in zip(centre, sides))
                mask[(i, slice(None), *box)] = 0
            x = x * mask
    return x


def r1_penalty(logits_of: Callable[[torch.Tensor], Sequence[torch.Tensor]], real: torch.Tensor) -> torch.Tensor:
    """``E‖∇ₓ Σ logits(x)‖²`` over the real batch (without the ``γ/2``), kept in the graph for the backward pass.

    Args:
        logits_of: the discriminator's logits (one tensor per scale) for an input.
        real: real images; not modified.
    """
    real = real.detach().float().requires_grad_(True)
    logits = logits_of(real)
    (grad,) = torch.autograd.grad(sum(t.float().sum() for t in logits), real, create_graph=True)
    return grad.pow(2).flatten(1).sum(1).mean()


def instance_noise(x: torch.Tensor, sigma: float, iteration: int, iterations: int | None) -> torch.Tensor:
    """``x`` plus Gaussian noise of standard deviation ``sigma · (1 − iteration / iterations)`` (``sigma`` throughout
    when the run's length is unknown)."""
    if sigma <= 0:
        return x
    scale = sigma * max(0.0, 1.0 - iteration / iterations) if iterations else sigma
    return x + scale * torch.randn_like(x) if scale > 0 else x
