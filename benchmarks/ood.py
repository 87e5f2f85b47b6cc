"""The out-of-distribution warning's detection table on real data (run on demand; table in docs/inference.md).

    python benchmarks/ood.py [--out benchmarks/results/ood.md]

A T1→T2 translator's training fingerprint depends on domain A only (not on the weights), so it is built from a
:class:`~medtrans.data.TrainStream` over the shared T1s (lesjak-ms-mni: 3 subjects, tcga-lgg-brainles: 2; the T2s as
domain B), without training. Each case is then measured as ``medtrans translate`` measures an input
(:func:`~medtrans.data.preprocessing.prepare`, then :func:`~medtrans.data.fingerprint.ood_report`):

- each training T1 held out (the fingerprint rebuilt from the other four): a new subject of a known protocol;
- the T2s and FLAIRs of the same subjects, the brats2015 FLAIRs and T1c (z-scored files, another protocol);
- a synthetic CT in HU (:func:`~medtrans.datasets.make_synthetic_mr_ct`);
- a lesjak T1 resampled to 5 mm slices; the raw longitudinal T1s (3 mm slices, not skull-stripped);
- a lesjak T1 whose affine swaps axes (R↔A↔S), flips superior–inferior, anterior–posterior or left–right (the
  lesjak files are stored LAS, the tcga files LPS: the anterior–posterior flip gives LPS, a header some training
  volumes have, the left–right flip RAS, which none has);
- the same T1 stored in RAS order with a correct header (the same anatomy: what the orientation check costs).
"""

from __future__ import annotations

import argparse
import datetime
import platform
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np

from medtrans.data import ImageRecord, TrainStream
from medtrans.data.fingerprint import COMPONENTS, build_fingerprint, ood_report, volume_stats
from medtrans.data.preprocessing import Preprocessing, prepare
from medtrans.datasets import make_synthetic_mr_ct
from medtrans.io import read_volume

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
LESJAK = [DATA / "lesjak-ms-mni" / p for p in ("patient07", "patient19", "patient26")]
TCGA = [DATA / "tcga-lgg-brainles" / s for s in ("TCGA-DU-7294", "TCGA-FG-6692")]
BRATS = sorted((DATA / "brats2015-deepmedic").glob("brats_*"))
RAW = sorted((DATA / "lesjak-ms-longitudinal-raw").glob("patient*/study1_T1W.nii.gz"))


def _t1(subject: Path) -> Path:
    return subject / ("T1.nii.gz" if "lesjak" in str(subject) else "t1.nii.gz")


def _other(subject: Path, contrast: str) -> Path:
    return subject / (f"{contrast}.nii.gz" if "lesjak" in str(subject) else f"{contrast.lower()}.nii.gz")


def _reoriented(path: Path, folder: Path, name: str, matrix: np.ndarray) -> Path:
    """``path`` with its affine's axes mapped by ``matrix`` (a wrong orientation header, same voxels)."""
    image = nib.load(path)
    affine = image.affine.copy()
    affine[:3, :3] = matrix @ affine[:3, :3]
    out = folder / f"{name}.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(image.dataobj, dtype=np.float32), affine), out)
    return out


def _stored_ras(path: Path, folder: Path) -> Path:
    """``path`` rewritten in RAS voxel order, its header kept correct (the same image in the world)."""
    image = nib.load(path)
    ras = image.as_reoriented(nib.orientations.ornt_transform(nib.io_orientation(image.affine),
                                                              nib.orientations.axcodes2ornt("RAS")))
    out = folder / "ras.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(ras.dataobj, dtype=np.float32), ras.affine), out)
    return out


def _thick(path: Path, folder: Path, mm: float = 5.0) -> Path:
    """``path`` resampled to ``mm`` slices along its last axis (torchio, as a thick-slice acquisition)."""
    import torchio as tio

    image = tio.ScalarImage(path)
    spacing = (*image.spacing[:2], mm)
    out = folder / "thick.nii.gz"
    tio.Resample(spacing)(image).save(out)
    return out


def cases(folder: Path) -> list[tuple[str, list[Path], bool | None]]:
    """``(case, files, should warn: None when either is right)``; held-out training T1s are measured separately (leave-one-out)."""
    ct = sorted((make_synthetic_mr_ct(folder / "mrct", num_train=2, num_test=0, voxel_mm=1.0) / "B").glob("*.nii.gz"))
    t1 = _t1(LESJAK[0])
    swap = np.array([[0, 0, 1], [1, 0, 0], [0, 1, 0]], dtype=float)
    return [
        ("T2 (lesjak, tcga)", [_other(s, "T2") for s in LESJAK + TCGA], True),
        ("FLAIR (lesjak, tcga)", [_other(s, "FLAIR") for s in LESJAK + TCGA], True),
        ("FLAIR (brats2015, z-scored)", [s / "flair.nii.gz" for s in BRATS], True),
        ("T1c (brats2015, z-scored)", [s / "t1c.nii.gz" for s in BRATS], None),
        ("T1 post-contrast (lesjak)", [s / "T1POST.nii.gz" for s in LESJAK], None),
        ("CT in HU (synthetic head)", ct, True),
        ("T1 resampled to 5 mm slices", [_thick(t1, folder)], True),
        ("T1 raw, 3 mm slices, with skull", RAW, True),
        ("T1, header swaps axes", [_reoriented(t1, folder, "swap", swap)], True),
        ("T1, header flips S-I", [_reoriented(t1, folder, "flip_si", np.diag([1.0, 1.0, -1.0]))], True),
        ("T1, header flips A-P", [_reoriented(t1, folder, "flip_ap", np.diag([1.0, -1.0, 1.0]))], True),
        ("T1, header flips L-R", [_reoriented(t1, folder, "flip_lr", np.diag([-1.0, 1.0, 1.0]))], True),
        ("T1 stored RAS, header correct", [_stored_ras(t1, folder)], None),
    ]


def _row(name: str, reports: list[dict], expected: bool | None) -> str:
    warned = sum(r["out_of_distribution"] for r in reports)
    worst = {c: max(r["distances"][c] for r in reports) for c in COMPONENTS}
    cells = " | ".join(f"{worst[c]:.3g}" for c in COMPONENTS)
    verdict = {True: "yes", False: "no", None: "either"}[expected]
    ok = "" if expected is None else ("✓" if warned == (len(reports) if expected else 0) else "✗")
    return f"| {name} | {len(reports)} | {cells} | {warned}/{len(reports)} | {verdict} | {ok} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="also write the table here")
    args = parser.parse_args()
    pre = Preprocessing()
    train = [_t1(s) for s in LESJAK + TCGA]
    stream = TrainStream([ImageRecord(p.parent.name, p) for p in train],
                         [ImageRecord(s.name, _other(s, "T2")) for s in LESJAK + TCGA],
                         {"patch_size": (64, 64, 64), "num_workers": 2, "prefetch": 0}, preprocessing_a=pre)
    fingerprint = stream.fingerprint()
    stats = [v.stats["a"] for v in stream.domains["a"]]
    lines = [f"thresholds {fingerprint['thresholds']}", "",
             f"| case | volumes | {' | '.join(COMPONENTS)} | warned | should warn | |",
             "|---|---|" + "---|" * len(COMPONENTS) + "---|---|---|"]
    held = [ood_report(build_fingerprint(stats[:i] + stats[i + 1 :]), s) for i, s in enumerate(stats)]
    lines.append(_row("T1 held out (leave-one-out, lesjak + tcga)", held, False))
    lines.append(_row("T1 of the training set", [ood_report(fingerprint, s) for s in stats], False))
    with tempfile.TemporaryDirectory() as tmp:
        for name, files, expected in cases(Path(tmp)):
            reports = [ood_report(fingerprint, volume_stats(prepare(read_volume(f), pre))) for f in files]
            lines.append(_row(name, reports, expected))
            print(lines[-1], flush=True)
    lines += ["", f"{platform.node()} {platform.processor() or platform.machine()}, CPU, "
              f"{datetime.date.today().isoformat()}; worst distance over the case's volumes"]
    print("\n".join(lines))
    if args.out is not None:
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
