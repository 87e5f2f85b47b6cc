"""What the faithfulness maps read on real contrast pairs (run on demand; figures quoted in docs/inference.md).

    python benchmarks/faithfulness_calibration.py [--eps 0.15]

For every co-registered T1/T2 pair in ../shared/data (lesjak-ms-mni: 3 subjects, tcga-lgg-brainles: 2), each volume
clipped to its 1–99th brain percentiles and scaled to [-1, 1] (background -1), it prints percentiles of the
``invented`` and ``erased`` maps inside the brain (voxels ≠ background in both) for: the T1 against itself (a perfect
translation: 0), against its contrast inversion (0: polarity is ignored), against the real T2 (what a *correct* T1→T2
translation looks like), and against the real T2 shifted by 3 voxels (misregistered).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from medtrans.data.intensity import fit_intensity, foreground_mask
from medtrans.faithfulness import faithfulness_maps

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
PAIRS = [(DATA / "lesjak-ms-mni" / p / "T1.nii.gz", DATA / "lesjak-ms-mni" / p / "T2.nii.gz") for p in ("patient07", "patient19", "patient26")]
PAIRS += [(DATA / "tcga-lgg-brainles" / s / "t1.nii.gz", DATA / "tcga-lgg-brainles" / s / "t2.nii.gz") for s in ("TCGA-DU-7294", "TCGA-FG-6692")]


def load(path: Path) -> tuple[np.ndarray, np.ndarray]:
    data = np.asarray(nib.load(path).dataobj, dtype=np.float32)
    fg = foreground_mask(data)
    return fit_intensity({"type": "percentile"}, data).forward(data) * fg + (-1.0) * ~fg, fg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--eps", type=float, default=0.15)
    args = parser.parse_args()
    print(f"# faithfulness maps on real pairs, eps={args.eps}; percentiles inside the brain")
    print("| pair | output | invented p50 | invented p95 | erased p50 | erased p95 |")
    print("|---|---|---|---|---|---|")
    for t1_path, t2_path in PAIRS:
        t1, fg1 = load(t1_path)
        t2, fg2 = load(t2_path)
        brain = torch.from_numpy(fg1 & fg2)
        s = torch.from_numpy(t1)[None, None]
        outputs = {"T1 itself": s, "inverted T1": -s, "real T2": torch.from_numpy(t2)[None, None],
                   "real T2 shifted 3 vox": torch.roll(torch.from_numpy(t2), 3, dims=0)[None, None]}
        for name, out in outputs.items():
            maps = faithfulness_maps(s, out, args.eps)
            inv = maps["invented"][0, 0][brain].numpy()
            era = maps["erased"][0, 0][brain].numpy()
            row = [np.percentile(inv, 50), np.percentile(inv, 95), np.percentile(era, 50), np.percentile(era, 95)]
            label = f"{t1_path.parent.parent.name}/{t1_path.parent.name}"
            print(f"| {label} | {name} | " + " | ".join(f"{v:.3f}" for v in row) + " |", flush=True)


if __name__ == "__main__":
    main()
