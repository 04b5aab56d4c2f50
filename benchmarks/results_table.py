"""The README's results section, generated from benchmarks/results/*.csv (never typed by hand).

python benchmarks/results_table.py            # print the section
python benchmarks/results_table.py --write    # replace it in README.md between the results markers
"""

import argparse
import csv
import statistics
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
START, END = "<!-- results:start -->", "<!-- results:end -->"
TASK_TITLES = {
    "digits_gan": ("digits generator (DCGAN)", ["fd_digits", "kid_digits"]),
    "photos_sr": ("photo 4x super-resolution (ResNet generator)", ["psnr", "ssim"]),
    "digits_cls": ("digits classifier (small CNN), students with 10 labels per class", ["accuracy", "agreement"]),
}


def _read(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _mean_std(values: list[float], digits: int) -> str:
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def compression_tables(rows: list[dict]) -> list[str]:
    """One table per task: mean ± std over seeds of every metric, per variant (latest commit's rows)."""
    lines = []
    by_task = defaultdict(lambda: defaultdict(lambda: defaultdict(dict)))
    for row in rows:  # later rows of the same (task, variant, seed, metric) replace earlier ones
        by_task[row["task"]][row["variant"]][row["metric"]][row["seed"]] = float(row["value"])
    for task, variants in by_task.items():
        title, quality = TASK_TITLES.get(task, (task, []))
        teacher_macs = statistics.mean(variants["teacher"]["macs"].values())
        seeds = sorted({seed for metrics in variants.values() for seed in metrics["macs"]})
        device = next(row["device"] for row in rows if row["task"] == task)
        lines += [f"**{title}** — {len(seeds)} seed(s), latency on {device}", "",
                  "| variant | params | MACs | MACs vs teacher | CPU ms (batch 1) | CPU ms (batch 64) | "
                  + " | ".join(quality) + " |", "|---|---:|---:|---:|---:|---:|" + "---:|" * len(quality)]  # fmt: skip
        for variant in ("teacher", "scratch", "distilled"):
            metrics = variants.get(variant)
            if not metrics:
                continue
            macs = statistics.mean(metrics["macs"].values())
            cells = [variant, f"{statistics.mean(metrics['params'].values()):,.0f}", f"{macs / 1e6:.2f} M",
                     f"1/{teacher_macs / macs:.1f}", _mean_std(list(metrics["latency_b1_ms"].values()), 2),
                     _mean_std(list(metrics["latency_b64_ms"].values()), 1)]  # fmt: skip
            cells += [_mean_std(list(metrics[name].values()), 4 if "kid" in name or name == "ssim" else 3)
                      if name in metrics else "—" for name in quality]  # fmt: skip
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def kernel_table(rows: list[dict]) -> list[str]:
    """The latest row per (kernel, provider, dtype, shape, device): ms, GB/s, % of copy bandwidth."""
    latest = {}
    for row in rows:
        latest[(row["device"], row["kernel"], row["dtype"], row["shape"], row["provider"])] = row
    lines = ["| device | kernel | dtype | shape | provider | ms | GB/s | % of copy bandwidth |",
             "|---|---|---|---|---|---:|---:|---:|"]  # fmt: skip
    for (device, kernel, dtype, shape, provider), row in sorted(latest.items()):
        lines.append(f"| {device} | {kernel} | {dtype} | {shape} | {provider} | {float(row['ms']):.3f} | "
                     f"{float(row['gbps']):.1f} | {100 * float(row['bw_fraction']):.0f}% |")  # fmt: skip
    return lines


def section() -> str:
    compression = _read(RESULTS / "compression.csv")
    kernels = _read(RESULTS / "kernels.csv")
    lines = [START, "", "### Compression (`python benchmarks/compress.py`)", ""]
    lines += compression_tables(compression) if compression else ["No compression rows yet.", ""]
    lines += ["### Kernels (`make bench`)", ""]
    lines += kernel_table(kernels) if kernels else ["No kernel rows yet."]
    gpu = any("cpu" not in row["device"] for row in kernels)
    lines += ["", "GPU rows: " + ("see the table." if gpu else "none measured yet (no GPU was available)."), ""]
    lines += ["Plots, drawn from the same CSVs by `python benchmarks/plot.py`, are in `benchmarks/results/`.", END]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", action="store_true", help="replace the section in README.md")
    args = parser.parse_args()
    text = section()
    if not args.write:
        print(text)
        return
    readme = (ROOT / "README.md").read_text()
    if START not in readme or END not in readme:
        raise SystemExit(f"README.md has no {START} ... {END} markers")
    before, rest = readme.split(START, 1)
    after = rest.split(END, 1)[1]
    (ROOT / "README.md").write_text(before + text + after)
    print("README.md results section updated")


if __name__ == "__main__":
    main()
