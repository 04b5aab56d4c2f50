"""Draw the benchmark figures from the CSVs under benchmarks/results/ (and nothing else).

python -m benchmarks.plot            # every figure, next to its CSV:
    <kernel>_<device>.png              GB/s per shape and provider (kernels.csv)
    train_step_<device>.png            images/s per workload and provider, loss share (train_step.csv)
    compression.png                    quality and MACs of each compression variant per task (compression.csv)
    ablation.png                       proxy FD of each distillation term set on digits (ablation.csv)
python -m benchmarks.plot --kernels-csv path/kernels.csv      # only the figures of the CSVs named
"""

import argparse
import re
import statistics
from collections import defaultdict
from pathlib import Path

from benchmarks.results_table import (
    ABLATION_VARIANTS,
    COMPRESSION_VARIANTS,
    TASK_TITLES,
    VARIANT_LABELS,
    by_variant,
    latest,
    read_rows,
)

RESULTS = Path(__file__).parent / "results"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower()


def plot_kernels(csv_path: Path, out_dir: Path) -> list[Path]:
    plt = _pyplot()
    groups = defaultdict(list)
    for row in latest(read_rows(csv_path), ("kernel", "provider", "dtype", "shape", "device")).values():
        groups[(row["kernel"], row["device"])].append(row)
    written = []
    for (kernel, device), rows in sorted(groups.items()):
        dtypes = sorted({row["dtype"] for row in rows})
        fig, axes = plt.subplots(1, len(dtypes), figsize=(6 * len(dtypes), 4), squeeze=False)
        for axis, dtype in zip(axes[0], dtypes, strict=True):
            subset = [row for row in rows if row["dtype"] == dtype]
            shapes = sorted({row["shape"] for row in subset}, key=lambda s: [int(n) for n in s.split("x")])
            providers = sorted({row["provider"] for row in subset})
            width = 0.8 / len(providers)
            for index, provider in enumerate(providers):
                by_shape = {row["shape"]: float(row["gbps"]) for row in subset if row["provider"] == provider}
                positions = [i + index * width for i, shape in enumerate(shapes) if shape in by_shape]
                axis.bar(positions, [by_shape[s] for s in shapes if s in by_shape], width, label=provider)
            axis.set_xticks([i + 0.4 - width / 2 for i in range(len(shapes))], shapes, rotation=20)
            axis.set_ylabel("GB/s (forward + backward, minimum bytes)")
            axis.set_title(f"{kernel} {dtype}")
            axis.legend(fontsize=8)
        fig.suptitle(device, fontsize=9)
        fig.tight_layout()
        out = out_dir / f"{kernel}_{_slug(device)}.png"
        fig.savefig(out, dpi=120)
        plt.close(fig)
        written.append(out)
    return written


def plot_train_step(csv_path: Path, out_dir: Path) -> list[Path]:
    """Images/s of a whole distillation step per workload, one bar per (provider, precision); the bar's label
    is the share of the step spent in the loss terms."""
    plt = _pyplot()
    cases = latest(read_rows(csv_path), ("device", "workload", "provider", "precision", "batch"))
    written = []
    for device in sorted({key[0] for key in cases}):
        rows = [row for key, row in cases.items() if key[0] == device]
        workloads = sorted({row["workload"] for row in rows})
        series = sorted({(row["provider"], row["precision"]) for row in rows})
        fig, axes = plt.subplots(1, len(workloads), figsize=(4 * len(workloads), 4), squeeze=False)
        for axis, workload in zip(axes[0], workloads, strict=True):
            for index, (provider, precision) in enumerate(series):
                match = [row for row in rows if row["workload"] == workload and row["provider"] == provider
                         and row["precision"] == precision]  # fmt: skip
                if not match:
                    continue
                row = match[-1]
                bar = axis.bar(index, float(row["images_per_s"]), label=f"{provider} {precision}")
                axis.bar_label(bar, [f"losses {float(row['loss_share']):.0%}"], fontsize=7)
            axis.set_xticks([])
            batch = next(row["batch"] for row in rows if row["workload"] == workload)
            axis.set_title(f"{workload} (batch {batch})")
            axis.set_ylabel("images/s (whole distillation step)")
            axis.legend(fontsize=7, loc="lower right")
        fig.suptitle(device, fontsize=9)
        fig.tight_layout()
        out = out_dir / f"train_step_{_slug(device)}.png"
        fig.savefig(out, dpi=120)
        plt.close(fig)
        written.append(out)
    return written


def _bars_with_spread(axis, labels: list[str], values: list[list[float]], colors: list[str]) -> None:
    means = [statistics.mean(v) for v in values]
    spreads = [statistics.stdev(v) if len(v) > 1 else 0.0 for v in values]
    axis.bar(range(len(labels)), means, yerr=spreads, capsize=4, color=colors)
    for index, points in enumerate(values):  # every seed as a dot over its bar
        axis.plot([index] * len(points), points, "k.", markersize=4)
    axis.set_xticks(range(len(labels)), labels, rotation=15, fontsize=8)


def plot_compression(csv_path: Path, out_dir: Path) -> list[Path]:
    """Per task: the first quality metric of each compression variant (mean, std, each seed), with each
    variant's MACs as a fraction of the teacher's."""
    plt = _pyplot()
    tasks = by_variant(read_rows(csv_path))
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.5 * len(tasks), 4), squeeze=False)
    for axis, (task, variants) in zip(axes[0], sorted(tasks.items()), strict=True):
        title, quality = TASK_TITLES.get(task, (task, []))
        metric = quality[0] if quality else next(name for name in variants["teacher"] if name not in ("params", "macs"))
        names = [name for name in COMPRESSION_VARIANTS if metric in variants.get(name, {}) and name != "bicubic"]
        teacher_macs = statistics.mean(variants["teacher"]["macs"].values())
        labels = [
            f"{VARIANT_LABELS.get(name, name).replace(', ', chr(10))}\n"
            f"1/{teacher_macs / statistics.mean(variants[name]['macs'].values()):.1f} MACs"
            for name in names
        ]
        values = [list(variants[name][metric].values()) for name in names]
        _bars_with_spread(axis, labels, values, ["tab:gray", "tab:orange", "tab:blue", "tab:green"][: len(names)])
        if metric in variants.get("bicubic", {}):  # the no-model floor of super-resolution
            axis.axhline(statistics.mean(variants["bicubic"][metric].values()), color="k", ls="--", lw=1)
            axis.text(len(names) - 0.5, statistics.mean(variants["bicubic"][metric].values()), "bicubic",
                      ha="right", va="bottom", fontsize=8)  # fmt: skip
        axis.set_ylabel(metric + (" (lower is better)" if metric.startswith(("fd", "kid")) else ""))
        axis.set_title(title, fontsize=9)
        if metric in ("psnr", "accuracy"):  # zoom in: these differ in the last few percent
            low, high = min(min(v) for v in values), max(max(v) for v in values)
            pad = 0.25 * (high - low) + (0.05 if metric == "psnr" else 0.005)
            axis.set_ylim(low - pad, high + pad)
    fig.tight_layout()
    out = out_dir / "compression.png"
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return [out]


def plot_ablation(csv_path: Path, out_dir: Path) -> list[Path]:
    """Proxy FD of the digits student for each set of distillation terms (mean, std, each seed)."""
    plt = _pyplot()
    variants = by_variant(read_rows(csv_path))["digits_gan"]
    names = [name for name in ABLATION_VARIANTS if name in variants]
    fig, axis = plt.subplots(figsize=(6, 4))
    _bars_with_spread(axis, names, [list(variants[name]["fd_digits"].values()) for name in names],
                      ["tab:orange" if name == "scratch" else "tab:blue" for name in names])  # fmt: skip
    axis.set_ylabel("fd_digits (lower is better)")
    axis.set_title("digits generator: which distillation terms earn their keep", fontsize=9)
    fig.tight_layout()
    out = out_dir / "ablation.png"
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return [out]


PLOTS = {"kernels": plot_kernels, "train_step": plot_train_step, "compression": plot_compression,
         "ablation": plot_ablation}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name in PLOTS:
        parser.add_argument(f"--{name.replace('_', '-')}-csv", type=Path, default=None, dest=name)
    parser.add_argument("--out-dir", type=Path, default=None, help="default: each CSV's folder")
    args = parser.parse_args()
    named = {name: getattr(args, name) for name in PLOTS if getattr(args, name) is not None}
    if named:
        for path in named.values():
            if not path.exists():
                raise SystemExit(f"{path} does not exist: run the benchmark that writes it first")
    else:
        named = {name: RESULTS / f"{name}.csv" for name in PLOTS if (RESULTS / f"{name}.csv").exists()}
        if not named:
            raise SystemExit(f"no CSVs under {RESULTS}: run a benchmark first")
    for name, path in named.items():
        for written in PLOTS[name](path, args.out_dir or path.parent):
            print(f"wrote {written}")


if __name__ == "__main__":
    main()
