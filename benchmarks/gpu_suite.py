"""The GPU suite: one call on a CUDA machine checks and measures what a GPU user relies on, in under 8 minutes.

    bash benchmarks/gpu_suite.sh --wheels WHEELS_DIR --out OUT_DIR          # installs wheels, then runs this
    python benchmarks/gpu_suite.py --out OUT_DIR [--device cuda] [--tiny]   # with medtrans importable

Parts, each written to ``OUT_DIR/<part>.csv`` as it finishes (a part that fails is recorded and the next one runs):

1. ``environment``: device, torch / CUDA / cuDNN / MONAI versions.
2. ``smoke``: every method × 2D/3D × {auto, fp32, bf16, fp16}, 3 training steps at the default patch and batch size
   (2D 128² × 4, 3D 64³ × 1) — whether it trains, the precision ``auto`` chose, the last step's time; and a
   whole-volume ``medtrans translate --device cuda`` of a 182×218×182 volume (lesjak patient26 T1) with a 3D and a 2D
   model, fp32 and auto, with its seconds.
3. ``speed``: s/it and peak CUDA memory of every method at 2D 128² × 4, 2D 256² × 1, 3D 48³, 96³ and 128³ × 1, auto and
   fp32 (median of 8 steps after 2 warm-up steps).
4. ``engine``: the training loop's it/s against the bare step's for NEC 3D 64³ and CycleGAN 3D 48³ on the real T1→T2
   split, and NEC 3D 96³ with ``compile_type`` none vs default (inductor).
5. ``quality``: a fixed iteration budget of NEC, CycleGAN, CUT and UNIT in 3D on the T1→T2 split of
   benchmarks/quality.py, scored by its scorer, one montage PNG each (``quality_<method>.png``).
6. ``large_volume``: a 512×512×800 volume translated with the volume in CPU memory and the windows on the GPU
   (seconds, peak CUDA memory), and the output of a crop against the all-on-GPU sliding window.

``--tiny`` shrinks every part (CPU check of the script itself). ``timings.csv`` records each part's seconds.
``--stage DIR`` only copies the data files the suite reads into ``DIR`` (then run with ``MEDTRANS_SHARED_DATA=DIR``).
"""

from __future__ import annotations

import argparse
import math
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).parent))

from quality import DATA, TASKS, brain_mask, score, split_records, train_and_translate  # noqa: E402
from train_speed import _sync, bare_step  # noqa: E402

from medtrans import defaults  # noqa: E402
from medtrans.registry import method_names  # noqa: E402
from medtrans.io import read_volume, write_volume  # noqa: E402
from medtrans.methods import build_method  # noqa: E402
from medtrans.model import TranslationModel, save_generator  # noqa: E402
from medtrans.utils import seed_everything  # noqa: E402
from medtrans.visualize import volume_montage  # noqa: E402

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
SPEED_SHAPES = {"2D 128² ×4": (2, (4, 1, 128, 128)), "2D 256² ×1": (2, (1, 1, 256, 256)),
                "3D 48³": (3, (1, 1, 48, 48, 48)), "3D 96³": (3, (1, 1, 96, 96, 96)), "3D 128³": (3, (1, 1, 128, 128, 128))}
QUALITY_ITERATIONS = {"nec": 2000, "cyclegan": 400, "cut": 400, "unit": 400}
VOLUME = DATA / "lesjak-ms-mni" / "patient26" / "T1.nii.gz"


def _method(name: str, dims: int, precision: str, device: torch.device, shape: tuple[int, ...], **options):
    seed_everything(0)
    return build_method(name, spatial_dims=dims, precision=precision, **options).setup(device, batch_voxels=math.prod(shape))


def _free(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


def environment(args: argparse.Namespace) -> list[dict]:
    import monai

    cuda = torch.cuda.is_available()
    return [{"device": torch.cuda.get_device_name() if cuda else platform.processor() or platform.machine(),
             "torch": torch.__version__, "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version() if cuda else None,
             "monai": monai.__version__, "bf16_supported": cuda and torch.cuda.is_bf16_supported(),
             "python": platform.python_version()}]


def smoke(args: argparse.Namespace) -> list[dict]:
    device, rows = torch.device(args.device), []
    for name in method_names():
        for dims in (2, 3):
            shape = (defaults.BATCH_SIZE[dims], 1, *(s for s in defaults.PATCH_SIZE[dims] if s != 1))
            if args.tiny:  # the smallest sides the default discriminators take
                shape = (1, 1) + ((96,) * 2 if dims == 2 else (48,) * 3)
            for precision in PRECISIONS:
                row = {"method": name, "dims": dims, "precision": precision, "shape": "x".join(map(str, shape[2:]))}
                try:
                    method = _method(name, dims, precision, device, shape)
                    seconds, memory = bare_step(method, device, shape, steps=1 if args.tiny else 2, warmup=1)
                    row.update(ok=True, amp=method.amp, s_per_it=seconds, peak_mb=memory)
                except Exception as err:  # noqa: BLE001 - the suite records every failure and goes on
                    row.update(ok=False, error=f"{type(err).__name__}: {str(err).splitlines()[0][:200]}")
                rows.append(row)
                print(f"smoke {name} {dims}D {precision}: {'ok' if row['ok'] else row['error']}", flush=True)
                _free(device)
    rows += translate_volume(args)
    return rows


def translate_volume(args: argparse.Namespace) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for dims in (3, 2):
            seed_everything(0)
            method = build_method("nec", spatial_dims=dims)
            model_path = save_generator(Path(tmp) / f"nec{dims}d.pt",
                                        TranslationModel(method.generator, method.generator_def, dims))
            for precision in ("fp32", "auto"):
                out = Path(tmp) / f"out{dims}{precision}.nii.gz"
                command = [sys.executable, "-m", "medtrans", "translate", str(VOLUME), str(out), "--model",
                           str(model_path), "--device", args.device, "--precision", precision, "--no-progress"]
                if args.tiny and dims == 3:
                    command += ["--roi-size", "32", "32", "32"]
                start = time.perf_counter()
                done = subprocess.run(command, capture_output=True, encoding="utf-8")
                seconds = time.perf_counter() - start
                rows.append({"method": f"translate 182x218x182 ({dims}D NEC)", "dims": dims, "precision": precision,
                             "ok": done.returncode == 0, "s_per_it": seconds, "error": done.stderr.strip()[-200:] or None})
                print(f"translate {dims}D {precision}: {seconds:.1f} s, rc {done.returncode}", flush=True)
    return rows


def speed(args: argparse.Namespace) -> list[dict]:
    device, rows = torch.device(args.device), []
    shapes = {"tiny 2D": (2, (1, 1, 96, 96)), "tiny 3D": (3, (1, 1, 48, 48, 48))} if args.tiny else SPEED_SHAPES
    for name in method_names():
        for label, (dims, shape) in shapes.items():
            for precision in ("auto", "fp32"):
                row = {"method": name, "shape": label, "precision": precision}
                try:
                    method = _method(name, dims, precision, device, shape)
                    seconds, memory = bare_step(method, device, shape, steps=2 if args.tiny else 8, warmup=2)
                    row.update(amp=method.amp, s_per_it=seconds, it_per_s=1 / seconds, peak_mb=memory)
                except Exception as err:  # noqa: BLE001
                    row.update(error=f"{type(err).__name__}: {str(err).splitlines()[0][:200]}")
                rows.append(row)
                print(f"speed {name} {label} {precision}: {row.get('s_per_it', row.get('error'))}", flush=True)
                _free(device)
    return rows


def engine(args: argparse.Namespace) -> list[dict]:
    from ignite.engine import Events

    from medtrans.data import TrainStream
    from medtrans.engine import TranslationTrainer

    device, rows = torch.device(args.device), []
    subjects, test = TASKS["t1-t2"]
    records = split_records("two", [s for s in sorted(subjects) if s != test], subjects, paired=False)
    warmup, iterations = (2, 3) if args.tiny else (10, 100)
    cases = [("nec", 64, "none"), ("cyclegan", 48, "none"), ("nec", 96, "none"), ("nec", 96, "default")]
    for name, side, compile_type in cases:
        side = 48 if args.tiny else side
        row = {"method": name, "patch": f"{side}³", "compile_type": compile_type}
        try:
            method = build_method(name, spatial_dims=3, compile_type=compile_type)
            seed_everything(0)
            stream = TrainStream(*records, {"patch_size": [side] * 3}, batch_size=1, seed=0)
            with tempfile.TemporaryDirectory() as tmp:
                trainer = TranslationTrainer(method, stream, tmp, iterations=warmup + iterations, device=args.device,
                                             resume=False, tracking="none", progress=False, log_interval=10**6,
                                             checkpoint_interval=10**6)
                marks: dict[str, float] = {}
                trainer.add_event_handler(Events.ITERATION_COMPLETED(once=warmup), lambda _, marks=marks: (
                    _sync(device), marks.setdefault("start", time.perf_counter())))
                trainer.run()
                _sync(device)
                engine_rate = iterations / (time.perf_counter() - marks["start"])
            seconds, _ = bare_step(method, device, (1, 1, side, side, side), steps=iterations, warmup=2)
            row.update(amp=method.amp, engine_it_per_s=engine_rate, bare_it_per_s=1 / seconds,
                       engine_over_bare=engine_rate * seconds)
        except Exception as err:  # noqa: BLE001
            row.update(error=f"{type(err).__name__}: {str(err).splitlines()[0][:200]}")
        rows.append(row)
        print(f"engine {row}", flush=True)
        _free(device)
    return rows


def quality(args: argparse.Namespace) -> list[dict]:
    subjects, test = TASKS["t1-t2"]
    train = [s for s in sorted(subjects) if s != test]
    test_a, test_b = read_volume(subjects[test][0]), read_volume(subjects[test][1])
    mask = brain_mask(test_a, subjects[test][2])
    rows = []
    for name, iterations in QUALITY_ITERATIONS.items():
        iterations = 2 if args.tiny else iterations
        records = split_records("two", train, subjects, paired=False)
        with tempfile.TemporaryDirectory() as tmp:
            run = train_and_translate(name, 3, records, test_a, iterations, 0, None,
                                      Path(tmp), {})
            row = {"method": name, "iterations": iterations, "train_seconds": run["seconds"],
                   **score(run["output"], test_a, test_b, mask)}
            files = [Path(tmp) / f"{k}.nii.gz" for k in ("out", "invented")]
            write_volume(files[0], run["output"], test_a)
            write_volume(files[1], run["invented"], test_a)
            volume_montage(subjects[test][0], files[0], subjects[test][1], files[1], args.out / f"quality_{name}.png",
                           scale_type="each")
        rows.append(row)
        print(f"quality {name}: {iterations} it in {run['seconds']:.0f} s, PSNR {row['psnr']:.2f} SSIM {row['ssim3d']:.3f}",
              flush=True)
    return rows


def large_volume(args: argparse.Namespace) -> list[dict]:
    """A 512×512×800 volume (a long CT) through a 3D NEC translator: the volume stays in CPU memory and only the
    windows go to the GPU; its seconds and peak CUDA memory. Then, on a 192×192×160 crop, the output against the
    same sliding window run with the whole volume on the GPU."""
    from monai.inferers import SlidingWindowInferer

    from medtrans.inference.translator import InferenceSettings, Translator

    seed_everything(0)
    method = build_method("nec", spatial_dims=3)
    model = TranslationModel(method.generator, method.generator_def, 3)
    roi = (32, 32, 32) if args.tiny else defaults.ROI_SIZE
    translator = Translator(model, InferenceSettings.for_model(model, device=args.device, precision="fp32",
                                                                roi_size=roi, progress=False))
    shape = (48, 48, 64) if args.tiny else (512, 512, 800)
    x = torch.rand((1, 1, *shape), generator=torch.Generator().manual_seed(0)) * 2 - 1
    cuda = translator.device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    translator.run_network(x)
    _sync(translator.device)
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
    crop = x[..., : shape[0] * 3 // 8, : shape[1] * 3 // 8, : shape[2] // 5].contiguous()
    on_cpu = translator.run_network(crop)
    s = translator.settings
    inferer = SlidingWindowInferer(roi_size=s.roi_size, sw_batch_size=s.sw_batch_size, overlap=s.overlap,
                                   mode=s.blend_mode, padding_mode="constant", cval=-1.0, sw_device=translator.device,
                                   device=translator.device)
    with torch.inference_mode():
        on_gpu = inferer(crop.to(translator.device), translator._forward).cpu()
    difference = float((on_cpu - on_gpu).abs().max())
    print(f"large volume {shape}: {seconds:.1f} s, peak CUDA {peak:.2f} GiB; CPU-resident vs on-GPU max |diff| "
          f"{difference:.2e} on {tuple(crop.shape[2:])}", flush=True)
    return [{"volume": "x".join(map(str, shape)), "seconds": seconds, "peak_cuda_gib": peak,
             "volume_gib": x.numel() * 4 / 2**30, "check_shape": "x".join(map(str, crop.shape[2:])),
             "max_abs_diff_vs_all_on_gpu": difference}]


PARTS = {"environment": environment, "smoke": smoke, "speed": speed, "engine": engine, "quality": quality,
         "large_volume": large_volume}


def stage(folder: Path) -> None:
    """Copy the files the suite reads (the T1→T2 split) into ``folder``, keeping ``../shared/data``'s layout."""
    subjects, _ = TASKS["t1-t2"]
    files = {p for paths in subjects.values() for p in paths if p is not None}
    for path in sorted(files):
        target = folder / path.relative_to(DATA)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
    print(f"copied {len(files)} files ({sum(p.stat().st_size for p in files) / 2**20:.0f} MB) to {folder}; "
          f"run with MEDTRANS_SHARED_DATA={folder}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path)
    parser.add_argument("--stage", type=Path, help="only copy the data the suite reads into this folder")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--parts", nargs="+", default=list(PARTS), choices=list(PARTS))
    parser.add_argument("--tiny", action="store_true", help="shrink every part (checks the script on a CPU)")
    args = parser.parse_args()
    if args.stage:
        stage(args.stage)
        return
    if args.out is None:
        parser.error("--out is required")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("gpu_suite: torch sees no CUDA device (use --device cpu --tiny to check the script)")
    torch.backends.cudnn.benchmark = True
    args.out.mkdir(parents=True, exist_ok=True)
    timings = []
    for part in args.parts:
        start = time.perf_counter()
        try:
            rows = PARTS[part](args)
            status = "ok"
        except Exception:  # noqa: BLE001 - record and go on to the next part
            rows, status = [], traceback.format_exc().strip().splitlines()[-1][:300]
            print(f"part {part} failed: {status}", flush=True)
        pd.DataFrame(rows).to_csv(args.out / f"{part}.csv", index=False)
        timings.append({"part": part, "seconds": time.perf_counter() - start, "status": status})
        pd.DataFrame(timings).to_csv(args.out / "timings.csv", index=False)
        print(f"== {part}: {timings[-1]['seconds']:.0f} s, {status}", flush=True)


if __name__ == "__main__":
    main()
