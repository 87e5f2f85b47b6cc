"""The faithfulness report measured on planted changes (run on demand; table quoted in docs/inference.md).

    python benchmarks/faithfulness_regions.py [--repeats 4] [--translation SUBJECT FILE] [--out benchmarks/results]

Tasks: T1 → T2 (lesjak-ms-mni: 3 subjects, tcga-lgg-brainles: 2) and T1c → FLAIR (brats2015-deepmedic: 4), from
../shared/data, each volume clipped to its 1–99th brain percentiles and scaled to [-1, 1]. Each threshold is the
largest region-scale residual that real pairs reach in normal tissue (8 mm or more inside the brain, 3 mm or more
from a labelled lesion); only subjects with lesion labels calibrate (lesjak, BraTS: the tcga tumours are unlabelled).
Every subject is held out in turn and scored with thresholds calibrated on the *other* labelled subjects, on:

- ``real``: its real co-registered target (the perfect translation: what the target contrast really shows);
- ``good``: a training-free good translation, the source mapped monotonically onto the target's histogram (inverted
  for T1 → T2): the translators' start;
- ``model``: a trained model's translation of the subject, when ``--translation SUBJECT FILE`` gives one.

Into each it plants smooth-edged spheres (radius 3, 5, 7, 10 mm; ±``--amplitude`` on the [-1, 1] scale, random
polarity, at random places 5 mm or more deeper than their radius and away from the lesions), one per radius per
trial, and it erases the real lesions (lesjak lesion masks, BraTS tumour labels) from the translation by filling
each with the normal tissue around it (the median of the brain 2–4 voxels away, outside the lesions, plus noise of
its spread). A planted sphere or erased lesion is found when a reported region overlaps it; a false region overlaps
none (on the unmodified translations, regions over a labelled lesion are counted apart). It writes
``faithfulness_regions.md`` and one calibration JSON per task (all labelled subjects) into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from medtrans.data.intensity import fit_intensity, foreground_mask
from medtrans.defaults import FAITHFULNESS_CALIBRATION
from medtrans.faithfulness_report import find_regions, residual_scores, structure_maps, voxel_spacing

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
LESJAK, TCGA, BRATS = DATA / "lesjak-ms-mni", DATA / "tcga-lgg-brainles", DATA / "brats2015-deepmedic"
TASKS = {
    "T1 -> T2": [(LESJAK / p / "T1.nii.gz", LESJAK / p / "T2.nii.gz", None, LESJAK / p / "lesion_mask.nii.gz")
                 for p in ("patient07", "patient19", "patient26")]
    + [(TCGA / s / "t1.nii.gz", TCGA / s / "t2.nii.gz", TCGA / s / "brainmask.nii.gz", None)
       for s in ("TCGA-DU-7294", "TCGA-FG-6692")],
    "T1c -> FLAIR": [(BRATS / s / "t1c.nii.gz", BRATS / s / "flair.nii.gz", BRATS / s / "brainmask.nii.gz",
                      BRATS / s / "tumor_labels.nii.gz") for s in ("brats_2013_pat0003_1", "brats_2013_pat0004_1",
                                                                   "brats_2013_pat0005_1", "brats_2013_pat0006_1")],
}
INVERTED = {"T1 -> T2": True, "T1c -> FLAIR": False}
RADII = (3, 5, 7, 10)
AMPLITUDE = 0.6


def read(path: Path) -> np.ndarray:
    return np.asarray(nib.load(path).dataobj, dtype=np.float32)


def load_subject(source: Path, target: Path, brain_path: Path | None, lesion_path: Path | None) -> dict:
    """Both images in [-1, 1], cropped to the brain's box, with the brain, the lesions and the voxel spacing."""
    s, t = read(source), read(target)
    brain = read(brain_path) > 0.5 if brain_path else foreground_mask(s) & foreground_mask(t)
    lesions = read(lesion_path) > 0 if lesion_path else np.zeros(s.shape, bool)
    box = ndimage.find_objects(brain.astype(np.uint8))[0]
    norm = [np.where(brain, fit_intensity({"type": "percentile"}, x, brain).forward(x), -1.0)[box].astype(np.float32)
            for x in (s, t)]
    spacing = voxel_spacing(nib.load(source).affine)
    return {"name": f"{source.parent.parent.name}/{source.parent.name}", "source": norm[0], "target": norm[1],
            "brain": brain[box], "lesions": lesions[box] & brain[box], "spacing": spacing,
            "affine": np.diag([*spacing, 1.0])}


def good_translation(subject: dict, inverted: bool) -> np.ndarray:
    """The source mapped monotonically (decreasing when ``inverted``) onto the target's brain histogram."""
    brain, s = subject["brain"], subject["source"]
    q = np.linspace(0, 1, 257)
    knots, values = np.quantile(s[brain], q), np.quantile(subject["target"][brain], q[::-1] if inverted else q)
    return np.where(brain, np.interp(s, knots, values), -1.0).astype(np.float32)


def normal_tissue(subject: dict, border_mm: float) -> np.ndarray:
    dist = ndimage.distance_transform_edt(subject["brain"], sampling=subject["spacing"])
    near = ndimage.distance_transform_edt(~subject["lesions"], sampling=subject["spacing"]) <= 3
    return (dist > border_mm) & ~near


def scores(subject: dict, output: np.ndarray, cal: dict) -> dict[str, np.ndarray]:
    return residual_scores(subject["source"], output, subject["brain"], subject["spacing"], cal["sigma_mm"],
                           cal["bins"])


def regions(subject: dict, output: np.ndarray, cal: dict) -> tuple[list[dict], np.ndarray]:
    structure = structure_maps(subject["source"], output, subject["brain"], subject["spacing"], cal["sigma_mm"])
    return find_regions(scores(subject, output, cal), subject["brain"], subject["affine"], cal, structure)


def load_translation(subject: dict, path: Path, brain_path: Path | None) -> np.ndarray:
    """A model's translation of the subject, normalised and cropped like its target."""
    data = read(path)
    brain = read(brain_path) > 0.5 if brain_path else foreground_mask(data)
    box = ndimage.find_objects(brain.astype(np.uint8))[0]
    out = np.where(brain, fit_intensity({"type": "percentile"}, data, brain).forward(data), -1.0)[box]
    return np.where(subject["brain"], out, -1.0).astype(np.float32)


def plant(subject: dict, output: np.ndarray, rng: np.random.Generator, avoid: np.ndarray, amplitude: float
          ) -> tuple[np.ndarray, list[tuple[int, float, np.ndarray]]]:
    """One smooth sphere per radius, random polarity, at random inner-brain places apart from each other."""
    dist = ndimage.distance_transform_edt(subject["brain"], sampling=subject["spacing"])
    grid = np.indices(output.shape, dtype=np.float32) * np.reshape(subject["spacing"], (-1,) + (1,) * output.ndim)
    out, blobs, taken = output.copy(), [], avoid.copy()
    for radius in RADII:
        allowed = np.argwhere((dist > radius + 5) & ~taken)
        centre = allowed[rng.integers(len(allowed))] * np.asarray(subject["spacing"])
        r = np.sqrt(((grid - centre.reshape((-1,) + (1,) * output.ndim)) ** 2).sum(0))
        sign = float(rng.choice([-1.0, 1.0]))
        out += sign * amplitude / (1 + np.exp((r - radius) / 0.7)) * subject["brain"]
        blobs.append((radius, sign, r < radius))
        taken |= r < radius + 10
    return np.clip(out, -1, 1).astype(np.float32), blobs


def erase(subject: dict, output: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each lesion (dilated by a voxel) filled with normal tissue: the median of the brain 2–4 voxels around it,
    outside every lesion, plus noise of that tissue's robust spread."""
    out = output.copy()
    components, count = ndimage.label(subject["lesions"])
    others = ndimage.binary_dilation(subject["lesions"], iterations=1)
    for c, box in enumerate(ndimage.find_objects(components), start=1):
        box = tuple(slice(max(s.start - 6, 0), s.stop + 6) for s in box)
        lesion = components[box] == c
        hole = ndimage.binary_dilation(lesion, iterations=1) & subject["brain"][box]
        ring = (ndimage.binary_dilation(lesion, iterations=4) & ~ndimage.binary_dilation(lesion, iterations=2)
                & subject["brain"][box] & ~others[box])
        if ring.sum() < 5:
            ring = subject["brain"][box] & ~others[box]
        tissue = output[box][ring]
        spread = 1.4826 * float(np.median(np.abs(tissue - np.median(tissue))))
        region = out[box]
        region[hole] = np.median(tissue) + spread * rng.standard_normal(int(hole.sum()))
    return out.astype(np.float32)


def overlaps(labels: np.ndarray, where: np.ndarray) -> set[int]:
    return set(np.unique(labels[where]).tolist()) - {0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="planting trials per subject and translation")
    parser.add_argument("--margin", type=float, default=1.0, help="thresholds = margin × the calibration maxima")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--tasks", nargs="*", default=list(TASKS))
    parser.add_argument("--sigma-mm", type=float, default=FAITHFULNESS_CALIBRATION["sigma_mm"])
    parser.add_argument("--border-mm", type=float, default=FAITHFULNESS_CALIBRATION["border_mm"])
    parser.add_argument("--amplitude", type=float, default=AMPLITUDE, help="planted spheres' peak, [-1, 1] scale")
    parser.add_argument("--translation", nargs=2, action="append", default=[], metavar=("SUBJECT", "FILE"),
                        help="a trained model's translation of a held-out subject (e.g. brats_2013_pat0004_1), "
                        "scored as a third translation ('model')")
    args = parser.parse_args()
    base = {k: FAITHFULNESS_CALIBRATION[k] for k in ("sigma_mm", "border_mm", "min_volume_mm3", "bins")}
    base.update(sigma_mm=args.sigma_mm, border_mm=args.border_mm)
    lines = [f"# faithfulness report on planted changes (sigma {base['sigma_mm']} mm, border {base['border_mm']} mm, "
             f"min {base['min_volume_mm3']} mm³, margin {args.margin}, {args.repeats} trials, amplitude "
             f"{args.amplitude})", ""]
    models = {name: Path(file) for name, file in args.translation}
    rng = np.random.default_rng(0)
    for task in args.tasks:
        t0 = time.time()
        subjects = [load_subject(*paths) for paths in TASKS[task]]
        maxima = []  # of the subjects with labelled lesions: only they calibrate (elsewhere, tumours would count)
        for subject in subjects:
            sc = scores(subject, subject["target"], base)
            normal = normal_tissue(subject, base["border_mm"])
            maxima.append({k: float(np.abs(sc[k])[normal].max()) for k in ("invented", "erased")})
            print(task, subject["name"], "normal-tissue maxima", maxima[-1], f"{time.time() - t0:.0f}s", flush=True)
        calibrators = [i for i, s in enumerate(subjects) if s["lesions"].any()]
        calibration = {**base, "thresholds": {k: round(args.margin * max(maxima[i][k] for i in calibrators), 3)
                                              for k in ("invented", "erased")},
                       "task": task, "provenance": "benchmarks/faithfulness_regions.py on "
                       + ", ".join(subjects[i]["name"] for i in calibrators)}
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"faithfulness_calibration_{task.replace(' -> ', '_').lower()}.json").write_text(
            json.dumps(calibration, indent=1) + "\n")
        found = defaultdict(lambda: [0, 0, 0])  # (translation, change, radius) -> [found, total, of the right kind]
        false = defaultdict(lambda: [0, 0])  # (translation, case) -> [false regions, volumes]
        at_lesions = defaultdict(int)
        held_thresholds = []
        for i, subject in enumerate(subjects):
            others = [maxima[j] for j in calibrators if j != i]
            cal = {**base, "thresholds": {k: args.margin * max(m[k] for m in others) for k in ("invented", "erased")}}
            held_thresholds.append(cal["thresholds"])
            avoid = ndimage.binary_dilation(subject["lesions"], iterations=5)
            outputs = [("real", subject["target"]), ("good", good_translation(subject, INVERTED[task]))]
            paths = TASKS[task][i]
            if paths[0].parent.name in models:
                outputs.append(("model", load_translation(subject, models[paths[0].parent.name], paths[2])))
            for kind, output in outputs:
                found_regions, labels = regions(subject, output, cal)
                hit = overlaps(labels, subject["lesions"])
                false[(kind, "unmodified")][0] += len(found_regions) - len(hit)
                false[(kind, "unmodified")][1] += 1
                at_lesions[kind] += len(hit)
                for _ in range(args.repeats):
                    planted, blobs = plant(subject, output, rng, avoid, args.amplitude)
                    found_regions, labels = regions(subject, planted, cal)
                    matched = set()
                    for radius, sign, ball in blobs:
                        ids = overlaps(labels, ball)
                        matched |= ids
                        key = (kind, "bright" if sign > 0 else "dark", radius)
                        found[key][0] += bool(ids)
                        found[key][1] += 1
                        found[key][2] += any(found_regions[j - 1]["kind"] == "invented" for j in ids)
                    false[(kind, "planted")][0] += len(set(range(1, len(found_regions) + 1)) - matched - overlaps(
                        labels, subject["lesions"]))
                    false[(kind, "planted")][1] += 1
                if subject["lesions"].any():
                    erased = erase(subject, output, rng)
                    found_regions, labels = regions(subject, erased, cal)
                    components, count = ndimage.label(subject["lesions"])
                    sizes = ndimage.sum(np.ones_like(components), components, range(1, count + 1))
                    for c, size in zip(range(1, count + 1), sizes):
                        radius = (3 * size * np.prod(subject["spacing"]) / (4 * np.pi)) ** (1 / 3)
                        band = next(b for b in (10, 7, 5, 3, 0) if radius >= b)
                        key = (kind, "erased lesion", band)
                        ids = overlaps(labels, components == c)
                        found[key][0] += bool(ids)
                        found[key][1] += 1
                        found[key][2] += any(found_regions[j - 1]["kind"] == "erased" for j in ids)
                    grown = ndimage.binary_dilation(subject["lesions"], iterations=2)
                    false[(kind, "erased")][0] += len(set(range(1, len(found_regions) + 1)) - overlaps(labels, grown))
                    false[(kind, "erased")][1] += 1
            print(task, subject["name"], "done", f"{time.time() - t0:.0f}s", flush=True)
        lines += [f"## {task}", "", f"calibration maxima per subject: " + "; ".join(
            f"{s['name']} invented {m['invented']:.2f} erased {m['erased']:.2f}" for s, m in zip(subjects, maxima)),
            "", "held-out thresholds (invented / erased): " + "; ".join(
            f"{t['invented']:.2f} / {t['erased']:.2f}" for t in held_thresholds),
            f"; all subjects: {calibration['thresholds']['invented']:.2f} / {calibration['thresholds']['erased']:.2f}",
            "", "| translation | change | radius (mm) | found | sensitivity | of the right kind |",
            "|---|---|---|---|---|---|"]
        bands = {0: "< 3", 3: "3–5", 5: "5–7", 7: "7–10", 10: "≥ 10"}
        for (kind, change, radius), (hit, total, right) in sorted(found.items()):
            label = bands[radius] if change == "erased lesion" else str(radius)
            lines.append(f"| {kind} | {change} | {label} | {hit}/{total} | {hit / total:.2f} | {right}/{hit} |")
        lines += ["", "| translation | case | false regions | volumes | per volume |", "|---|---|---|---|---|"]
        for (kind, case), (n, v) in sorted(false.items()):
            lines.append(f"| {kind} | {case} | {n} | {v} | {n / v:.2f} |")
        lines += ["", "regions on the unmodified translations that overlap a labelled lesion: "
                  + ", ".join(f"{k} {v}" for k, v in at_lesions.items()), ""]
        print("\n".join(lines[-40:]), flush=True)
    (args.out / "faithfulness_regions.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
