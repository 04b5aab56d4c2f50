"""The README's results section, generated from benchmarks/results/*.csv (never typed by hand).

python -m benchmarks.results_table            # print the section
python -m benchmarks.results_table --write    # replace it in README.md between the results markers
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
    "digits_cls": (
        "digits classifier (small CNN), students with 10 labels per class (distilled ones also see the "
        "other training images, unlabelled)",
        ["accuracy", "agreement"],
    ),
    "photos_sr_gan": ("photo 4x super-resolution with a conditional PatchGAN (ResNet generator)", ["psnr", "ssim"]),
}

# The digits ablation: the distilled student with the distillation terms added one at a time (cumulative), each
# set as term weights (`terms`); "scratch" is the same student without a teacher. Output and adversarial use the
# shipped recipe's options, and the feature terms tap ABLATION_FEATURE_PAIRS; attention 100 puts its first-step
# value (~0.02 summed over the three pairs) near the others.
ABLATION_FEATURE_PAIRS = {"stem": "stem", "blocks.0": "blocks.0", "blocks.1": "blocks.1"}
ABLATION_TERMS = {
    "output": "{output: 1.0}",
    "+feature": "{output: 1.0, adapted: 1.0}",
    "+attention": "{output: 1.0, adapted: 1.0, attention: 100.0}",
    "+adversarial": "{output: 1.0, adapted: 1.0, attention: 100.0, adversarial: 0.01}",
}
ABLATION_VARIANTS = ("scratch", *ABLATION_TERMS)
# The compression variants in table order, with the label a row shows when it is not the variant's name.
COMPRESSION_VARIANTS = ("teacher", "scratch", "distilled", "distilled_init", "bicubic")
VARIANT_LABELS = {"distilled_init": "distilled, from the pruned teacher"}
STANDARD_COLUMNS = ("fid", "kid", "lpips")  # shown when a task's rows have them (their weights were present)


def read_rows(path: Path) -> list[dict]:
    """The rows of a results CSV ([] when it does not exist yet)."""
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _mean_std(values: list[float], digits: int) -> str:
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def latest(rows: list[dict], columns: tuple[str, ...]) -> dict[tuple, dict]:
    """{the row's values of `columns`: the last row with those values} (a re-measured case replaces the old)."""
    return {tuple(row[column] for column in columns): row for row in rows}


def by_variant(rows: list[dict]) -> dict:
    """{task: {variant: {metric: {seed: value}}}}; a later row of the same (task, variant, seed, metric)
    replaces an earlier one."""
    tasks = defaultdict(lambda: defaultdict(lambda: defaultdict(dict)))
    for row in rows:
        tasks[row["task"]][row["variant"]][row["metric"]][row["seed"]] = float(row["value"])
    return tasks


def compression_tables(rows: list[dict]) -> list[str]:
    """One table per task: mean ± std over seeds of every metric, per variant."""
    lines = []
    for task, variants in by_variant(rows).items():
        title, quality = TASK_TITLES.get(task, (task, []))
        present = {metric for metrics in variants.values() for metric in metrics}
        quality = quality + [name for name in STANDARD_COLUMNS if name in present]
        teacher_macs = statistics.mean(variants["teacher"]["macs"].values())
        seeds = sorted({seed for metrics in variants.values() for seed in metrics.get("macs", {})})
        device = next(row["device"] for row in rows if row["task"] == task)
        lines += [f"**{title}** — {len(seeds)} seed(s), latency on {device}", "",
                  "| variant | params | MACs | MACs vs teacher | CPU ms (batch 1) | CPU ms (batch 64) | "
                  + " | ".join(quality) + " |", "|---|---:|---:|---:|---:|---:|" + "---:|" * len(quality)]  # fmt: skip
        for variant in COMPRESSION_VARIANTS:
            metrics = variants.get(variant)
            if not metrics:
                continue
            if "macs" in metrics:
                macs = statistics.mean(metrics["macs"].values())
                params = statistics.mean(metrics["params"].values())
                cells = [VARIANT_LABELS.get(variant, variant), f"{params:,.0f}", f"{macs / 1e6:.2f} M",
                         f"1/{teacher_macs / macs:.1f}", _mean_std(list(metrics["latency_b1_ms"].values()), 2),
                         _mean_std(list(metrics["latency_b64_ms"].values()), 1)]  # fmt: skip
            else:  # a reference without a model (bicubic upsampling)
                cells = [f"{variant} (no model)"] + ["—"] * 5
            cells += [_mean_std(list(metrics[name].values()), 4 if "kid" in name or name in ("ssim", "lpips") else 3)
                      if name in metrics else "—" for name in quality]  # fmt: skip
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return lines


# The targets: (task, the variant judged, what is asked, metric, how that variant's mean is compared with the
# other variant's mean, that variant, threshold, direction). "recovery" is (variant − scratch) / (teacher −
# scratch): the share of the teacher's gain over the scratch student that the variant recovers.
TARGETS = [
    ("digits_gan", "distilled", "distilled MACs ≤ 1/8 of the teacher's", "macs", "ratio", "teacher", 1 / 8, "≤"),
    ("digits_gan", "distilled", "distilled fd_digits ≤ 0.8 × scratch's", "fd_digits", "ratio", "scratch", 0.8, "≤"),
    ("digits_gan", "distilled", "distilled fd_digits ≤ 1.3 × teacher's", "fd_digits", "ratio", "teacher", 1.3, "≤"),
    ("digits_gan", "distilled_init", "distilled from the pruned teacher: fd_digits ≤ 1.05 × teacher's", "fd_digits",
     "ratio", "teacher", 1.05, "≤"),
    ("photos_sr", "distilled", "distilled MACs ≤ 1/8 of the teacher's", "macs", "ratio", "teacher", 1 / 8, "≤"),
    ("photos_sr", "distilled", "distilled PSNR − scratch's ≥ +0.3 dB", "psnr", "difference", "scratch", 0.3, "≥"),
    ("photos_sr", "distilled", "distilled PSNR − teacher's ≥ −0.5 dB", "psnr", "difference", "teacher", -0.5, "≥"),
    ("photos_sr", "teacher", "teacher PSNR − bicubic's ≥ +0.5 dB", "psnr", "difference", "bicubic", 0.5, "≥"),
    ("photos_sr", "distilled", "distilled PSNR recovers ≥ half the teacher's gain over scratch", "psnr", "recovery",
     "scratch", 0.5, "≥"),
    ("photos_sr", "distilled_init", "distilled from the pruned teacher: PSNR recovery ≥ 0.5", "psnr", "recovery",
     "scratch", 0.5, "≥"),
    ("photos_sr_gan", "distilled", "distilled MACs ≤ 1/8 of the teacher's", "macs", "ratio", "teacher", 1 / 8, "≤"),
    ("photos_sr_gan", "teacher", "teacher PSNR − bicubic's ≥ +0.5 dB", "psnr", "difference", "bicubic", 0.5, "≥"),
    ("photos_sr_gan", "distilled", "distilled PSNR recovers ≥ half the teacher's gain over scratch", "psnr",
     "recovery", "scratch", 0.5, "≥"),
    ("digits_cls", "distilled", "distilled accuracy − scratch's ≥ +0.01 (1 point)", "accuracy", "difference",
     "scratch", 0.01, "≥"),
    ("digits_cls", "distilled_init", "distilled from the pruned teacher: accuracy − teacher's ≥ −0.015",
     "accuracy", "difference", "teacher", -0.015, "≥"),
]  # fmt: skip


def targets_table(rows: list[dict]) -> list[str]:
    """Each target against the means over seeds in the compression rows: the measured figure, met or missed."""
    tasks = by_variant(rows)
    lines = ["| task | target | measured (means over seeds) | |", "|---|---|---:|---|"]
    for task, subject, target, metric, comparison, other, threshold, direction in TARGETS:
        values = tasks.get(task, {})
        needed = (subject, other, "teacher") if comparison == "recovery" else (subject, other)
        if any(metric not in values.get(variant, {}) for variant in needed):
            continue
        judged = statistics.mean(values[subject][metric].values())
        reference = statistics.mean(values[other][metric].values())
        if comparison == "recovery":
            value = (judged - reference) / (statistics.mean(values["teacher"][metric].values()) - reference)
        else:
            value = judged / reference if comparison == "ratio" else judged - reference
        met = value <= threshold if direction == "≤" else value >= threshold
        shown = f"{value:+.3g}" if comparison == "difference" else f"{value:.3g}" + ("×" * (comparison == "ratio"))
        lines.append(f"| {task} | {target} | {shown} | {'met' if met else 'missed'} |")
    return lines


def ablation_table(rows: list[dict]) -> list[str]:
    """Digits ablation: fd_digits and kid_digits (mean ± std over seeds) of each term set, and its change
    against the scratch student."""
    variants = by_variant(rows)["digits_gan"]
    seeds = sorted({seed for metrics in variants.values() for seed in metrics.get("fd_digits", {})})
    scratch = statistics.mean(variants["scratch"]["fd_digits"].values())
    pairs = ", ".join(f"{student} → {teacher}" for student, teacher in ABLATION_FEATURE_PAIRS.items())
    lines = [f"{len(seeds)} seed(s); each row adds one term to the row above it (term weights; the feature terms tap "
             f"{pairs}).", "",
             "| variant | terms | fd_digits | vs scratch | kid_digits |",
             "|---|---|---:|---:|---:|"]  # fmt: skip
    for variant in ABLATION_VARIANTS:
        metrics = variants.get(variant)
        if not metrics or "fd_digits" not in metrics:
            continue
        fd = list(metrics["fd_digits"].values())
        weights = f"`{ABLATION_TERMS[variant]}`" if variant in ABLATION_TERMS else "(no teacher)"
        lines.append(f"| {variant} | {weights} | {_mean_std(fd, 3)} | {statistics.mean(fd) / scratch:.2f}× | "
                     f"{_mean_std(list(metrics['kid_digits'].values()), 4)} |")  # fmt: skip
    return lines


def train_step_table(rows: list[dict]) -> list[str]:
    """The latest row per (device, workload, precision, batch, provider)."""
    lines = ["| device | workload | precision | batch | losses | step ms | images/s | loss ms | share of step |",
             "|---|---|---|---:|---|---:|---:|---:|---:|"]  # fmt: skip
    cases = latest(rows, ("device", "workload", "precision", "batch", "provider"))
    for (device, workload, precision, batch, provider), row in sorted(cases.items()):
        lines.append(f"| {device} | {workload} | {precision} | {batch} | {provider} | {float(row['step_ms']):.1f} | "
                     f"{float(row['images_per_s']):.0f} | {float(row['loss_ms']):.2f} | "
                     f"{100 * float(row['loss_share']):.1f}% |")  # fmt: skip
    return lines


def _image(name: str, results: Path = RESULTS) -> list[str]:
    return [f"![{name}](benchmarks/results/{name})", ""] if (results / name).is_file() else []


def kernel_table(rows: list[dict]) -> list[str]:
    """The latest row per (kernel, provider, dtype, shape, device): ms, GB/s, % of copy bandwidth."""
    lines = ["| device | kernel | dtype | shape | provider | ms | GB/s | % of copy bandwidth |",
             "|---|---|---|---|---|---:|---:|---:|"]  # fmt: skip
    cases = latest(rows, ("device", "kernel", "dtype", "shape", "provider"))
    for (device, kernel, dtype, shape, provider), row in sorted(cases.items()):
        lines.append(f"| {device} | {kernel} | {dtype} | {shape} | {provider} | {float(row['ms']):.3f} | "
                     f"{float(row['gbps']):.1f} | {100 * float(row['bw_fraction']):.0f}% |")  # fmt: skip
    return lines


def section(results: Path = RESULTS) -> str:
    """The README's results section from the CSVs (and figures) under `results`."""
    compression = read_rows(results / "compression.csv")
    ablation = read_rows(results / "ablation.csv")
    train_step = read_rows(results / "train_step.csv")
    kernels = read_rows(results / "kernels.csv")
    lines = [START, "", "### Compression (`python -m benchmarks.compress`)", ""]
    lines += compression_tables(compression) if compression else ["No compression rows yet.", ""]
    lines += targets_table(compression) + [""] if compression else []
    lines += _image("compression.png", results)
    lines += ["### Digits ablation (`python -m benchmarks.compress --ablation`)", ""]
    lines += ablation_table(ablation) + [""] if ablation else ["No ablation rows yet.", ""]
    lines += _image("ablation.png", results)
    lines += ["### Distillation training step (`python -m benchmarks.bench_train_step`)", ""]
    lines += train_step_table(train_step) + [""] if train_step else ["No training-step rows yet.", ""]
    lines += [image for path in sorted(results.glob("train_step_*.png")) for image in _image(path.name, results)]
    lines += ["### Kernels (`make bench`)", ""]
    lines += kernel_table(kernels) if kernels else ["No kernel rows yet."]
    gpu = any("cpu" not in row["device"] for row in kernels + train_step)
    lines += ["", "GPU rows: " + ("see the tables." if gpu else "none measured yet (no GPU was available)."), ""]
    lines += [image for path in sorted(results.glob("*.png")) if not path.name.startswith(("compression",
              "ablation", "train_step")) for image in _image(path.name, results)]  # fmt: skip
    lines += ["Every figure is drawn from the same CSVs by `python -m benchmarks.plot`.", END]
    return "\n".join(lines)


def write_section(text: str, readme: Path = ROOT / "README.md") -> None:
    """Replace the results section of `readme` (between the results markers) with `text`."""
    content = readme.read_text()
    if START not in content or END not in content:
        raise SystemExit(f"{readme} has no {START} ... {END} markers")
    before, rest = content.split(START, 1)
    readme.write_text(before + text + rest.split(END, 1)[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", action="store_true", help="replace the section in README.md")
    args = parser.parse_args()
    text = section()
    if not args.write:
        print(text)
        return
    write_section(text)
    print("README.md results section updated")


if __name__ == "__main__":
    main()
