"""Helpers the MONAI bundles (``bundles/``) call from their configs."""

from __future__ import annotations

from pathlib import Path

__all__ = ["bundle_path"]


def bundle_path(bundle_root: str | Path | None, *parts: str) -> str:
    """``bundle_root/part/...``: where a bundle keeps its runs, model and outputs.

    Raises:
        ValueError: when ``bundle_root`` is not set: MONAI runs a config from any folder, so a bundle must be told
            where it lives, or it would write into the current folder.
    """
    if not bundle_root:
        raise ValueError("bundle_root is not set: add --bundle_root <the bundle's folder, e.g. bundles/nec> (it holds "
                         "runs/, models/ and eval/)")
    root = Path(bundle_root)
    if not (root / "configs").is_dir():
        raise ValueError(f"bundle_root {root} is not a bundle folder (it has no configs/)")
    return str(root.joinpath(*parts))
