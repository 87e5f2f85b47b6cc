"""PNG montages: training visuals, and axial slices of a translation beside its input, target, error and map."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from medtrans.data.intensity import foreground_mask
from medtrans.io import atomic_write

__all__ = ["MONTAGE_LABELS", "save_png", "tensor_montage", "volume_montage"]

MONTAGE_LABELS = ("input", "translation", "target", "|error|", "invented structure")


def tensor_montage(images: Mapping[str, torch.Tensor]) -> np.ndarray:
    """First sample of each image side by side (middle slice of the last axis for 3D), [-1, 1] → uint8 ``(H, W)``."""
    tiles = []
    for image in images.values():
        x = image[0, 0].detach().float().cpu()
        if x.ndim == 3:
            x = x[..., x.shape[-1] // 2]
        tiles.append(((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy())
    height = max(t.shape[0] for t in tiles)
    tiles = [np.pad(t, ((0, height - t.shape[0]), (0, 2))) for t in tiles]
    return np.concatenate(tiles, axis=1)


def save_png(path: str | Path, image: np.ndarray, scale: int = 1, labels: Sequence[tuple[int, str]] = ()) -> Path:
    """Write a uint8 ``(H, W)`` array as PNG, atomically, optionally enlarged ``scale`` times, with ``labels`` —
    ``(column in pixels of the unscaled image, text)`` — written in a strip above it."""
    from PIL import Image, ImageDraw, ImageFont

    picture = Image.fromarray(image)
    if scale > 1:
        picture = picture.resize((image.shape[1] * scale, image.shape[0] * scale), Image.NEAREST)
    if labels:
        font = ImageFont.load_default(size=14)
        framed = Image.new("L", (picture.width, picture.height + 22), 0)
        framed.paste(picture, (0, 22))
        draw = ImageDraw.Draw(framed)
        for column, text in labels:
            draw.text((column * scale + 4, 3), text, fill=255, font=font)
        picture = framed
    return atomic_write(path, lambda tmp: picture.save(tmp, format="PNG"))


def volume_montage(source: str | Path, output: str | Path, target: str | Path, invented: str | Path, path: str | Path,
                   scale_type: str = "target", labels: Sequence[str] = MONTAGE_LABELS) -> Path:
    """Middle axial slice (RAS) of input | translation | target | |error| | invented-structure map, as a PNG with each
    column labelled.

    Args:
        scale_type: ``"target"``: translation, target and error share the target's display range (outputs in target
            units); ``"each"``: translation and target are each mapped by their own 1st–99th percentiles inside the
            input's foreground to [0, 1], as the ``each`` evaluation protocol scores them (outputs whose units differ
            from this target's, e.g. a model trained on another scanner's intensities, or z-scored volumes).
        labels: the five column titles.

    Raises:
        ValueError: for an unknown ``scale_type``.
    """
    if scale_type not in ("target", "each"):
        raise ValueError(f"scale_type must be 'target' or 'each', got {scale_type!r}")

    def axial(p: str | Path) -> np.ndarray:
        data = np.asarray(nib.as_closest_canonical(nib.load(p)).dataobj, dtype=np.float32)
        return data[:, :, data.shape[2] // 2].T[::-1]

    def top(x: np.ndarray) -> float:
        return float(np.percentile(x[x > 0], 99.5)) if (x > 0).any() else 1.0

    s, o, t, f = axial(source), axial(output), axial(target), axial(invented)
    if scale_type == "each":
        fg = foreground_mask(s) if np.ptp(s) > 0 else np.ones(s.shape, bool)

        def each(x: np.ndarray) -> np.ndarray:
            low, high = np.percentile(x[fg], [1, 99])
            return np.where(fg, (x - low) / max(high - low, 1e-12), 0)

        o, t = each(o), each(t)
    else:
        o, t = o / top(t), t / top(t)
    tiles = [np.clip(x, 0, 1) for x in (s / top(s), o, t, 2 * np.abs(o - t), f / 0.6)]
    row = np.concatenate([np.pad(x, ((0, 0), (0, 4))) for x in tiles], axis=1)
    columns = [i * (s.shape[1] + 4) for i in range(len(tiles))]
    return save_png(path, (row * 255).astype(np.uint8), scale=2, labels=list(zip(columns, labels)))
