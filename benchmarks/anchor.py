"""medtrans on the 2D anchor protocol that the public reference CUT and CycleGAN were measured on, scored by its own
scorer (../shared/tools/anchor_protocol.py).

    python benchmarks/anchor.py --method cut --iterations 1030 [--reference] [--score-at N ...] [--set KEY=VALUE ...]
        [--out DIR]

The protocol's ``prepare`` writes 128×128 8-bit PNG axial slices: trainA = T1 of lesjak patient07 + TCGA-DU-7294 (187
slices), trainB = T2 of lesjak patient19 + TCGA-FG-6692 (206), testA/testB_gt = lesjak patient26 (95), with masks.
This script stacks each PNG folder into one NIfTI volume (slices along the last axis, 1 mm, no reorientation), trains a
medtrans method on 128×128 slices, batch 1, uniform slice sampling, intensities 0–255 mapped to [-1, 1] as the
reference code maps them, translates testA slice by slice, writes the outputs as PNGs under the testA names (network
range back to 0–255, as the reference's ``tensor2im``), and runs the protocol's ``score`` on them. The summary adds
r(source), the outputs' correlation with the test T1 in the mask (negative once the contrast is flipped); the CSF–WM
contrast, the outputs' median in the CSF minus that in the white matter, relative to the real T2's (1 = the T2's
contrast, negative = the T1's; medians, so speckle barely moves it, unlike r; the tissues are a 3-class Otsu of the
test T1 in the mask); the
checkerboard measure of ``medtrans.metrics`` on the stacked slices (the outputs' energy at the 2-pixel period relative
to the target's; 1 = none added), and ``judged_real``: the target-domain discriminator's mean output on the test T2, on
the bar (the inverted test T1, hist-matched to trainB), on the plain hist-matched test T1 and on the translation
(LSGAN: 1 = real), which shows whether the adversarial term prefers either contrast. ``--score-at`` also
scores the model at earlier iterations of the same run: one run gives the learning curve, the reported training time
leaves the scoring out, and the learning rate follows the whole run's schedule (by default constant for its first half,
so a point scored there is not the model a shorter run ends with, whose rate has decayed).

``--reference`` uses the reference code's setting: 64-wide generators with 9 residual blocks, 64-wide PatchGANs, a
constant learning rate of 2e-4 (its decay starts after 200 epochs, far beyond these runs), LSGAN, and its initialisation
(Xavier, gain 0.02, for both: the CUT repository's, whose CycleGAN baselines.md measured; the original CycleGAN
code draws N(0, 0.02), ``--set init_type=normal``). For CUT also the CUT repository's anti-aliased resampling
(``downsample_type="blurpool"`` in G and D, ``upsample_type="linear"``) and its PatchNCE layers (input, both
downsamplings, the first and fifth residual blocks). Differences that remain: 1 input channel (the reference loader
makes 3 from the gray PNGs), no resize-to-286 / random crop to 256 / flips (the reference's augmentation); CycleGAN
keeps strided and transposed convolutions (the setting measured against the public code: docs/notes.md, "Against
the public code").
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from ignite.engine import Events
from PIL import Image
from skimage.filters import threshold_multiotsu

from medtrans.data import ImageRecord, TrainStream
from medtrans.engine import TranslationTrainer
from medtrans.commands.train import parse_assignments
from medtrans.inference import InferenceSettings, Translator
from medtrans.io import read_volume
from medtrans.methods import build_method
from medtrans.metrics import checkerboard
from medtrans.networks import discriminator_logits
from medtrans.utils import seed_everything

sys.path.insert(0, str(Path(__file__).parent))

from quality import DATA, correlation  # noqa: E402

TOOL = DATA.parent / "tools" / "anchor_protocol.py"
REFERENCE = {
    "cut": {"generator": {"channels": 64, "num_res_blocks": 9, "downsample_type": "blurpool", "upsample_type": "linear"},
            "discriminator": {"channels": 64, "downsample_type": "blurpool"}, "nce_layers": [0, 2, 3, 4, 8],
            "init_type": "xavier", "lr_decay_iters": 0},
    "cyclegan": {"generator": {"channels": 64, "num_res_blocks": 9}, "discriminator": {"channels": 64},
                 "init_type": "xavier", "lr_decay_iters": 0},
}
WINDOW = {"intensity": {"type": "window", "low": 0, "high": 255}, "canonical": False}


def pngs(folder: Path) -> tuple[np.ndarray, list[str]]:
    """The PNGs of ``folder``, sorted by name (the protocol's slice order), as one (128, 128, N) array, and their names."""
    paths = sorted(folder.glob("*.png"))
    return np.stack([np.asarray(Image.open(p).convert("L"), dtype=np.float32) for p in paths], axis=-1), [p.name for p in paths]


def stack(folder: Path, out: Path) -> list[str]:
    """The PNGs of ``folder`` as one (128, 128, N) NIfTI volume; returns their names in slice order."""
    pixels, names = pngs(folder)
    nib.save(nib.Nifti1Image(pixels, np.eye(4)), out)
    return names


def protocol_tool():
    """../shared/tools/anchor_protocol.py as a module (its loaders and histogram matching, as its scorer uses them)."""
    spec = importlib.util.spec_from_file_location("anchor_protocol", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def csf_wm_contrast(output: np.ndarray, source: np.ndarray, target: np.ndarray, mask: np.ndarray) -> float:
    """The output's CSF–WM median difference over the real target's, the tissues being a 3-class Otsu of ``source`` in
    ``mask`` (darkest class CSF, brightest WM: a T1): 1 = the T2's contrast, negative = the T1's, 0 = none."""
    low, high = threshold_multiotsu(source[mask], classes=3)
    csf, wm = mask & (source < low), mask & (source >= high)

    def contrast(image: np.ndarray) -> float:
        return float(np.median(image[csf]) - np.median(image[wm]))

    return contrast(output) / contrast(target.astype(np.float32))


@torch.no_grad()
def judged_real(method, images: dict[str, np.ndarray]) -> dict[str, float]:
    """The target-domain discriminator's mean output on each stack of (N, 128, 128) slices in [0, 1] (LSGAN: 1 = real,
    0 = fake): which of the test T2, the bar (inverted T1, hist-matched) and the plain hist-matched T1 it takes for
    real, beside the translation itself; the adversarial term pulls the generator toward what it scores higher."""
    network, device = method.target_discriminator, method.device
    network.eval()
    scores = {}
    for key, slices in images.items():
        batch = torch.from_numpy(np.ascontiguousarray(slices, dtype=np.float32) * 2 - 1)[:, None].to(device)
        outputs = [discriminator_logits(network(chunk)) for chunk in batch.split(16)]
        scores[key] = float(np.mean([torch.cat(scale).float().mean().item() for scale in zip(*outputs)]))
    network.train()
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--method", default="cut")
    parser.add_argument("--iterations", type=int, default=1030)
    parser.add_argument("--reference", action="store_true", help="the reference code's networks and schedule")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--score-at", type=int, nargs="*", default=[], metavar="N",
                        help="also score the model after these iterations of the run")
    parser.add_argument("--threads", type=int)
    parser.add_argument("--label", default=None)
    parser.add_argument("--out", type=Path, default=Path("anchor_output"))
    args = parser.parse_args()
    points = sorted(set(args.score_at) - {args.iterations})
    for n in points:
        if not 0 < n < args.iterations:
            parser.error(f"--score-at {n}: must lie between 0 and --iterations {args.iterations}")
    if args.threads:
        torch.set_num_threads(args.threads)
    options = {**(REFERENCE[args.method] if args.reference else {}), **parse_assignments(args.set)}
    label = args.label or f"medtrans {args.method}{' (reference setting)' if args.reference else ''}"
    data = args.out / "protocol"
    if not (data / "protocol.json").exists():
        subprocess.run([sys.executable, str(TOOL), "prepare", "--out", str(data)], check=True)
    volumes = args.out / "volumes"
    volumes.mkdir(parents=True, exist_ok=True)
    names = {split: stack(data / split, volumes / f"{split}.nii.gz") for split in ("trainA", "trainB", "testA")}

    seed_everything(args.seed)
    method = build_method(args.method, spatial_dims=2, **options)
    stream = TrainStream([ImageRecord("trainA", volumes / "trainA.nii.gz")], [ImageRecord("trainB", volumes / "trainB.nii.gz")],
                         {"patch_size": [128, 128, 1], "sampler_type": "uniform"}, batch_size=1,
                         preprocessing_a=WINDOW, preprocessing_b=WINDOW, seed=args.seed)
    (source, _), (target, _), (mask, _) = (pngs(data / folder) for folder in ("testA", "testB_gt", "masks/testA"))
    mask = mask > 127
    tool = protocol_tool()
    # the scorer's layout: (N, 128, 128), intensities in [0, 1]
    t1, t2, inside = (np.moveaxis(a, -1, 0) for a in (source / 255, target / 255, mask))
    pooled_b = tool.pooled_trainB(str(data))
    probes = {"test T2": t2, "inverted T1, hist-matched": tool.histmatch_inside(np.where(inside, 1 - t1, 0), pooled_b, inside),
              "T1, hist-matched": tool.histmatch_inside(t1, pooled_b, inside)}

    clock = {"start": 0.0, "scoring": 0.0}  # training time leaves the scoring out

    def score(trainer: TranslationTrainer) -> None:
        """Translate testA with the model as it is now, write its PNGs, score them and write the summary."""
        begin, iterations = time.perf_counter(), trainer.state.iteration
        seconds = begin - clock["start"] - clock["scoring"]
        trainer.method.eval()
        result = Translator(trainer.model, InferenceSettings(progress=False)).translate(read_volume(volumes / "testA.nii.gz"))
        trainer.method.train()
        predictions = args.out / f"pred_{args.method}_{iterations}{'_ref' if args.reference else ''}"
        predictions.mkdir(exist_ok=True)
        pixels = np.clip(np.round((result.output_normalized + 1) / 2 * 255), 0, 255).astype(np.uint8)
        for i, name in enumerate(names["testA"]):
            Image.fromarray(pixels[:, :, i]).save(predictions / name)
        # r(source): the translation's correlation with the test T1 inside the mask; negative once the contrast is flipped
        output = pixels.astype(np.float32)
        r_source = {"model": correlation(output, source, mask), "target": correlation(target, source, mask)}
        grid = checkerboard(output, target, mask)  # 2-voxel-period energy relative to the target's
        tissues = csf_wm_contrast(output, source, target, mask)
        judged = judged_real(trainer.method, {**probes, "translation": np.moveaxis(output, -1, 0) / 255})
        scores = predictions.with_suffix(".json")
        subprocess.run([sys.executable, str(TOOL), "score", "--data", str(data), "--pred", str(predictions), "--label",
                        label, "--out", str(scores)], check=True)
        subprocess.run([sys.executable, str(TOOL), "montage", "--data", str(data), "--pred", str(predictions), "--out",
                        str(predictions.with_suffix(".png"))], check=True)
        summary = {"label": label, "iterations": iterations, "train_seconds": seconds, "seed": args.seed,
                   "options": args.set, "threads": torch.get_num_threads(), "torch": torch.__version__,
                   "r_source": r_source, "csf_wm_contrast": tissues, "checkerboard": grid,
                   "judged_real": judged, "scores": json.loads(scores.read_text())}
        (predictions.with_suffix(".summary.json")).write_text(json.dumps(summary, indent=2))
        print(json.dumps(summary, indent=2), flush=True)
        clock["scoring"] += time.perf_counter() - begin

    with tempfile.TemporaryDirectory() as tmp:
        trainer = TranslationTrainer(method, stream, tmp, iterations=args.iterations, resume=False, tracking="none",
                                     progress=False, log_interval=max(1, args.iterations // 10))
        for n in points:
            trainer.add_event_handler(Events.ITERATION_COMPLETED(once=n), score)
        clock["start"] = time.perf_counter()
        trainer.run()
        score(trainer)


if __name__ == "__main__":
    main()
