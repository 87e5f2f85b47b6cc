"""The figures of docs/results.md, drawn from the measured figures kept in benchmarks/results/*.csv.

    .venv/bin/python benchmarks/plots.py [--results benchmarks/results] [--output docs/figures] [--only NAME ...]

Each CSV holds figures exactly as the benchmark scripts printed them (see docs/results.md for the command behind
each file); this script only draws them: one PNG per figure, named after the figure, written to ``--output``.
Nothing here measures anything. The output is deterministic (Agg backend, fixed size and resolution, no timestamp or
version in the PNG metadata), so a figure changes only when its CSV or this script does.

Figures (CSV → PNG):
- ``demo``: demo.csv → PSNR / SSIM of the demo's NEC runs beside the training-free baselines.
- ``t1t2_2d_loso``: t1t2_2d_loso.csv → NEC 2D T1→T2 per left-out subject beside the bar.
- ``t1t2_3d_loso``: t1t2_3d_loso.csv → NEC / CUT 3D T1→T2 per left-out subject beside the bar.
- ``t1cflair_loso``: t1cflair_loso.csv → NEC T1c→FLAIR per left-out subject beside both baselines.
- ``anchor_reference``: anchor_reference.csv → medtrans against the public CUT / CycleGAN on the 2D anchor protocol.
- ``anchor_methods``: anchor_methods.csv → the ResNet methods on the 2D anchor protocol beside the baselines.
- ``speed_cpu``: speed_cpu.csv → training steps per second of every method on the 2-core CPU.
- ``speed_devices``: speed_cpu.csv + speed_gpu.csv → training steps per second per method and device (3D).
"""

from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
OUTPUT = HERE.parent / "docs" / "figures"

ROLE_COLOURS = {"baseline": "#b8b8b8", "bar": "#6b6b6b", "public": "#e3a33b", "method": "#2f6db5", "variant": "#8fb3e0"}
SERIES_COLOURS = ["#8fb3e0", "#2f6db5", "#d9702b", "#5aa05a", "#9b59b6", "#c0392b"]
METRICS = (("psnr", "PSNR dB"), ("ssim", "SSIM 3D"))


def read(results: Path, name: str) -> list[dict[str, str]]:
    with open(results / f"{name}.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def value(text: str) -> float | None:
    return float(text) if text not in ("", None) else None


def ordered(items) -> list:
    """The distinct items in their first order of appearance."""
    return list(dict.fromkeys(items))


def save(fig, output: Path, name: str) -> Path:
    path = output / f"{name}.png"
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)
    return path


def style(ax, label: str) -> None:
    ax.set_ylabel(label)
    ax.grid(axis="y", color="#e4e4e4", linewidth=0.8)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def horizontal_bars(rows: list[dict[str, str]], title: str, note: str, bar_row: dict[str, str] | None):
    """One bar per row (baselines and methods alike), PSNR and SSIM side by side, the bar's value as a dashed line."""
    labels = [r["series"] for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(10, 0.42 * len(rows) + 1.6), sharey=True)
    y = list(range(len(rows)))[::-1]
    for ax, (key, label) in zip(axes, METRICS):
        values = [value(r[key]) for r in rows]
        colours = [ROLE_COLOURS[r["role"]] for r in rows]
        ax.barh(y, [v if v is not None else 0 for v in values], color=colours, height=0.7)
        span = max(abs(v) for v in values if v is not None)
        for yi, v, r in zip(y, values, rows):
            text = "not measured" if v is None else r[key]  # the figure as measured, never re-rounded
            x = 0 if v is None else v
            ax.text(x + (0.01 * span if x >= 0 else -0.01 * span), yi, text, va="center",
                    ha="left" if x >= 0 else "right", fontsize=8)
        if bar_row is not None and value(bar_row[key]) is not None:
            ax.axvline(value(bar_row[key]), color=ROLE_COLOURS["bar"], linestyle="--", linewidth=1)
        ax.axvline(0, color="black", linewidth=0.6)
        ax.set_xlabel(label)
        ax.grid(axis="x", color="#e4e4e4", linewidth=0.8)
        ax.set_axisbelow(True)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
        lo = min(0, min(v for v in values if v is not None))
        ax.set_xlim(lo - (0.3 * span if lo < 0 else 0), 1.2 * span)
    axes[0].set_yticks(y, labels, fontsize=9)
    fig.suptitle(title, fontsize=11, x=0.01, ha="left")
    fig.text(0.01, 0.01, note, fontsize=8, color="#444444", ha="left", va="bottom")
    fig.tight_layout(rect=(0, 0.05, 1, 0.95))
    return fig


def series_colours(rows: list[dict[str, str]], series: list[str]) -> dict[str, str]:
    """Greys for the training-free baselines (the bar darkest), colours for the trained models, in series order."""
    role = {r["series"]: r["role"] for r in rows}
    greys, others = iter(["#a0a0a0", "#d0d0d0"]), iter(SERIES_COLOURS)
    return {s: "#6b6b6b" if role[s] == "bar" else next(greys) if role[s] == "baseline" else next(others)
            for s in series}


def grouped_bars(rows: list[dict[str, str]], group_key: str, title: str, note: str, colours=None, groups=None,
                 series=None):
    """Groups along x (folds or methods), one bar per series in each; a missing bar reads "n/m" (not measured)."""
    groups = groups or ordered(r[group_key] for r in rows)
    series = series or ordered(r["series"] for r in rows)
    colours = colours or series_colours(rows, series)
    table = {(r[group_key], r["series"]): r for r in rows}
    role = {r["series"]: r["role"] for r in rows}
    trained = {g for g in groups if any(r[group_key] == g and r["role"] not in ("baseline", "bar") for r in rows)}
    # a group has a slot for each series it holds, and for every trained series when it holds any (a missing one
    # then reads "n/m"); a group of baselines only has slots for its baselines
    slots = {g: [s for s in series if (g, s) in table or (g in trained and role[s] not in ("baseline", "bar"))]
             for g in groups}
    fig, axes = plt.subplots(2, 1, figsize=(min(12, max(8, 0.45 * len(groups) * len(series) + 2)), 7.2), sharex=True)
    for ax, (key, label) in zip(axes, METRICS):
        values = [value(r[key]) for r in rows if value(r[key]) is not None]
        top, bottom = max(values + [0]), min(values + [0])
        for i, g in enumerate(groups):
            width = 0.8 / len(slots[g])
            for j, s in enumerate(slots[g]):
                x = i - 0.4 + width * (j + 0.5)
                r = table.get((g, s))
                v = value(r[key]) if r else None
                if v is None:
                    ax.text(x, 0, "n/m", ha="center", va="bottom", fontsize=6, color="#888888", rotation=90)
                    continue
                ax.bar(x, v, width * 0.92, color=colours[s], label=s)
                ax.text(x, v, r[key], ha="center", va="bottom" if v >= 0 else "top", fontsize=6, rotation=90)
        ax.axhline(0, color="black", linewidth=0.6)
        ax.set_ylim(bottom * 1.25 if bottom < 0 else 0, top * 1.22)
        style(ax, label)
    axes[1].set_xticks(range(len(groups)), groups, fontsize=9)
    handles, labels = axes[0].get_legend_handles_labels()
    by_label = dict(zip(labels, handles))
    axes[0].legend([by_label[s] for s in series if s in by_label], [s for s in series if s in by_label],
                   fontsize=8, ncol=2, loc="upper left", bbox_to_anchor=(0, 1.02), frameon=False)
    axes[0].set_ylim(top=axes[0].get_ylim()[1] * 1.25)
    axes[1].set_ylim(top=axes[1].get_ylim()[1] * 1.1)
    fig.suptitle(title, fontsize=11, x=0.01, ha="left")
    fig.text(0.01, 0.01, note, fontsize=8, color="#444444", ha="left", va="bottom")
    fig.tight_layout(rect=(0, 0.04, 1, 0.96))
    return fig


def demo(results: Path):
    rows = read(results, "demo")
    bar = next(r for r in rows if r["role"] == "bar")
    return horizontal_bars(
        rows, "The demo: synthetic T1w → T2w, NEC 2D (default 1,000 iterations), held-out subject",
        "CPU (2 cores), torch 2.13.0+cpu, seed 0. Dashed: the inverted + histogram-matched input (the bar). "
        "Variants: see docs/results.md.", bar)


def t1t2_2d_loso(results: Path):
    rows = [r for r in read(results, "t1t2_2d_loso") if r["role"] in ("bar", "method")]
    return grouped_bars(
        rows, "fold", "T1 → T2, NEC 2D, leave one subject out (1,000 iterations, seed 0)",
        "CPU (2 cores), torch 2.13.0+cpu; trained at bf38a07, 'defaults now' translated at a77c783. "
        "bar = inverted + histogram-matched input.")


def t1t2_3d_loso(results: Path):
    rows = read(results, "t1t2_3d_loso")
    return grouped_bars(
        rows, "fold", "T1 → T2, 3D, leave one subject out (2,000 iterations, seed 0) — before today's defaults",
        "H200 rows: torch 2.11.0+cu130, ec95d23, 64³ patches, lambda_start 0. CPU row: torch 2.13.0+cpu, 48³, "
        "no start mapping. n/m: not measured (CUT crashed there).")


def t1cflair_loso(results: Path):
    rows = read(results, "t1cflair_loso")
    return grouped_bars(
        rows, "fold", "T1c → FLAIR, NEC, leave one subject out (2,000 iterations, seed 0) — before today's defaults",
        "CPU (2 cores), torch 2.13.0+cpu. The bar: beat the better input in SSIM and come within 0.5 dB of it in "
        "PSNR.")


def anchor_reference(results: Path):
    rows = [r for r in read(results, "anchor_reference") if r["in_plot"] == "1"]
    bar = next(r for r in rows if r["role"] == "bar")
    return horizontal_bars(
        rows, "2D anchor protocol (T1 → T2 slices): medtrans against the public CUT and CycleGAN code",
        "CPU, torch 2.13.0+cpu, seed 0; CUT 1,030 and CycleGAN 412 iterations. Orange: the public code. "
        "Dashed: the inverted + histogram-matched input.", bar)


def anchor_methods(results: Path):
    rows = read(results, "anchor_methods")
    runs = {"1000": "1,000 iterations, the defaults then", "longest": "longest whole run at the defaults",
            "t1_t2": "the T1→T2 experiment config"}
    for r in rows:
        if r["role"] in ("baseline", "bar"):
            r["series"], r["method"] = r["method"], "baselines"
        else:
            r["series"] = runs[r["run"]]
    series = ["histogram-matched input", "inverted + histogram-matched input (bar)"] + [runs[k] for k in
                                                                                          ("1000", "longest", "t1_t2")]
    colours = dict(zip(series, ["#b8b8b8", "#6b6b6b", "#8fb3e0", "#2f6db5", "#d9702b"]))
    fig = grouped_bars(
        rows, "method", "2D anchor protocol: the ResNet methods beside the baselines (before the start mapping)",
        "CPU, torch 2.13.0+cpu, seed 0 (FSeSim's longest run: seed 1; CUT's config: mean of 3 seeds). Iterations "
        "and settings per bar: docs/results.md. n/m: not measured.", colours=colours, series=series)
    bar = next(r for r in rows if r["role"] == "bar")
    for ax, (key, _) in zip(fig.axes, METRICS):
        ax.axhline(value(bar[key]), color="#6b6b6b", linestyle="--", linewidth=1)
    return fig


def speed_cpu(results: Path):
    rows = read(results, "speed_cpu")
    methods = ordered(r["method"] for r in rows)
    configs = [("2D", "fp32"), ("2D", "bf16"), ("3D", "fp32"), ("3D", "bf16")]
    colours = ["#8fb3e0", "#2f6db5", "#f0b27a", "#d9702b"]
    table = {(r["method"], r["dims"], r["precision"]): r for r in rows}
    fig, ax = plt.subplots(figsize=(10, 4.8))
    width = 0.2
    for j, (dims, precision) in enumerate(configs):
        shape = "128² × 4" if dims == "2D" else "48³ × 1"
        for i, m in enumerate(methods):
            r = table[(m, dims, precision)]
            v = float(r["it_per_s"])
            x = i - 0.4 + width * (j + 0.5)
            ax.bar(x, v, width * 0.92, color=colours[j], label=f"{dims} {shape}, {precision}" if i == 0 else None)
            ax.text(x, v * 1.04, r["it_per_s"], ha="center", va="bottom", fontsize=6, rotation=90)
    ax.set_yscale("log")
    ax.set_ylim(0.1, 30)
    ax.set_xticks(range(len(methods)), methods)
    style(ax, "training steps per second (log)")
    ax.legend(fontsize=8, ncol=4, loc="upper right", frameon=False)
    fig.suptitle("Training speed on the 2-core CPU (2 threads; random batches, no data loading)", fontsize=11,
                 x=0.01, ha="left")
    fig.text(0.01, 0.01, "torch 2.13.0+cpu; nec and pix2pix 2026-11-26 (22b78c9), the others 2026-11-25. "
             "Median step after one warm-up.", fontsize=8, color="#444444")
    fig.tight_layout(rect=(0, 0.04, 1, 0.95))
    return fig


def speed_devices(results: Path):
    cpu = {r["method"]: r for r in read(results, "speed_cpu") if r["dims"] == "3D" and r["precision"] == "fp32"}
    gpu = {(r["method"], r["shape"], r["precision"]): r for r in read(results, "speed_gpu")}
    methods = list(cpu)
    configs = [("CPU, 2 threads: 3D 48³, fp32", None), ("H200: 3D 48³, fp32", ("3D 48³", "fp32")),
               ("H200: 3D 96³, fp32", ("3D 96³", "fp32")), ("H200: 3D 96³, auto", ("3D 96³", "auto")),
               ("H200: 3D 128³, fp32", ("3D 128³", "fp32"))]
    colours = ["#b8b8b8", "#8fb3e0", "#2f6db5", "#5aa05a", "#d9702b"]
    width = 0.8 / len(configs)
    fig, ax = plt.subplots(figsize=(10, 5.2))
    labelled: set[str] = set()
    for j, (label, key) in enumerate(configs):
        for i, m in enumerate(methods):
            x = i - 0.4 + width * (j + 0.5)
            if key is None:
                seconds = cpu[m]["s_per_it"]
            else:
                r = gpu.get((m,) + key)
                if r is None:
                    ax.text(x, 0.055, "not reported", ha="center", va="bottom", fontsize=6, color="#888888",
                            rotation=90)
                    continue
                seconds = r["s_per_it"]
            v = 1 / float(seconds)
            ax.bar(x, v, width * 0.92, color=colours[j], label=label if label not in labelled else None)
            labelled.add(label)
            ax.text(x, v * 1.05, f"{seconds} s", ha="center", va="bottom", fontsize=6, rotation=90)
    ax.set_yscale("log")
    ax.set_ylim(0.05, 300)
    ax.set_xticks(range(len(methods)), methods)
    style(ax, "training steps per second = 1 / (s/it), log")
    ax.legend(fontsize=8, ncol=2, loc="upper right", frameon=False)
    fig.suptitle("Training speed per method and device, 3D, batch 1 (bar labels: measured s/it)", fontsize=11,
                 x=0.01, ha="left")
    fig.text(0.01, 0.01, "CPU: torch 2.13.0+cpu. H200: torch 2.11.0+cu130, commit 85e6b10, 2026-11-30; "
             "only the shapes reported are drawn. H100: not measured.", fontsize=8, color="#444444")
    fig.tight_layout(rect=(0, 0.04, 1, 0.95))
    return fig


FIGURES = {f.__name__: f for f in (demo, t1t2_2d_loso, t1t2_3d_loso, t1cflair_loso, anchor_reference,
                                   anchor_methods, speed_cpu, speed_devices)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder of the CSV files")
    parser.add_argument("--output", type=Path, default=OUTPUT, help="folder the PNG files are written to")
    parser.add_argument("--only", nargs="+", choices=list(FIGURES), help="draw only these figures")
    args = parser.parse_args()
    args.output.mkdir(parents=True, exist_ok=True)
    plt.rcParams.update({"font.size": 9, "svg.hashsalt": "medtrans", "font.family": "DejaVu Sans"})
    for name in args.only or FIGURES:
        path = save(FIGURES[name](args.results), args.output, name)
        print(f"{path} ({math.ceil(path.stat().st_size / 1024)} KB)")


if __name__ == "__main__":
    main()
