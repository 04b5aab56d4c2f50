"""`gankd demo`: distil a digits generator end to end on a CPU, with the numbers that say what it bought.

Trains (or reuses from the cache) a class-conditional DCGAN teacher on the embedded digits, distils a
student with about 1/14 of its MACs, trains the same student from scratch with the same budget, and
evaluates the three: params, MACs, CPU latency at batch 1 and 64, and the offline proxy FD/KID. Writes
report.md, metrics.json and sample grids into a run directory and prints the table.
"""

import hashlib
import json
import shutil
import time
from pathlib import Path

import torch

from gankd import configs, models
from gankd.config import load_config, to_dict
from gankd.metrics import measure_latency
from gankd.metrics.proxy import cache_dir

from .loop import load_trained_model, run_directory, train

VARIANTS = ("teacher", "distilled", "scratch")


def _config(name: str, output_dir: Path, overrides: list[str]):
    # The shipped configs are package data: the demo runs from a checkout and from an installed wheel alike.
    return load_config(configs.path(name), [f"output_dir={output_dir}", *overrides])


def _teacher_run(overrides: list[str], log) -> Path:
    """The teacher's run directory, trained once per configuration and kept in the cache."""
    config = _config("digits_dcgan_teacher", Path("."), overrides)
    key = hashlib.sha256(json.dumps(to_dict(config) | {"output_dir": ""}, sort_keys=True).encode()).hexdigest()[:12]
    config.output_dir = str(cache_dir() / "demo" / key)
    run = run_directory(config)
    if (run / "metrics.json").is_file():
        log(f"teacher: reusing {run}")
        return run
    if run.exists():
        shutil.rmtree(run)  # an unfinished teacher from an interrupted demo: start it again
    log(f"teacher: training {config.steps} steps into {run} (kept for later demos)")
    train(config)
    return run


def measure_run(run: Path) -> dict:
    """A finished run's cost and quality: params, MACs, CPU latency at batch 1 and 64 (ms), final metrics."""
    model, _, _ = load_trained_model(run)
    cost = models.cost(model, *models.example_inputs(model))
    latency = {r["batch"]: r["latency_ms"] for r in measure_latency(model, lambda n: models.example_inputs(model, n))}
    quality = json.loads((run / "metrics.json").read_text())["metrics"]
    return {"params": cost["params"], "macs": cost["macs"], "latency_b1_ms": latency[1],
            "latency_b64_ms": latency[64], **quality}  # fmt: skip


def _row(variant: str, run: Path) -> dict:
    config = load_config(run / "config.yaml")
    train_seconds = json.loads((run / "metrics.json").read_text()).get("train_seconds")
    return dict(variant=variant, width=config.model.options.get("ngf"), **measure_run(run),
                train_seconds=train_seconds, run=str(run))  # fmt: skip


def format_table(rows: list[dict]) -> str:
    teacher_macs = rows[0]["macs"]
    columns = ("model", "ngf", "params", "MACs", "MACs vs teacher", "CPU ms (batch 1)", "CPU ms (batch 64)",
               "fd_digits", "kid_digits")  # fmt: skip
    lines = ["| " + " | ".join(columns) + " |", "|---|" + "---:|" * (len(columns) - 1)]
    for row in rows:
        lines.append(f"| {row['variant']} | {row['width']} | {row['params']:,} | {row['macs'] / 1e6:.2f} M | "
                     f"1/{teacher_macs / row['macs']:.1f} | {row['latency_b1_ms']:.2f} | {row['latency_b64_ms']:.1f} | "
                     f"{row['fd_digits']:.2f} | {row['kid_digits']:.4f} |")  # fmt: skip
    return "\n".join(lines)


def run_demo(output_dir: str | Path = "runs", overrides: list[str] = (), log=print) -> dict:
    """Run the demo; `overrides` (--set) apply to all three runs (e.g. steps=50 for a quick look)."""
    started = time.perf_counter()
    demo_dir = Path(output_dir) / f"demo-{time.strftime('%Y%m%d-%H%M%S')}"
    teacher = _teacher_run(list(overrides), log)
    runs = {"teacher": teacher}
    for variant, name in (("distilled", "digits_dcgan_distill"), ("scratch", "digits_dcgan_scratch")):
        config = _config(name, demo_dir, [*overrides, f"distill.teacher={teacher}"])
        log(f"{variant}: {config.steps} steps into {run_directory(config)}")
        train(config)
        runs[variant] = run_directory(config)
    rows = [_row(variant, runs[variant]) for variant in VARIANTS]
    table = format_table(rows)
    for variant, run in runs.items():
        if (run / "samples" / "final.png").is_file():
            shutil.copy(run / "samples" / "final.png", demo_dir / f"samples_{variant}.png")
    seconds = time.perf_counter() - started
    report = ["# gankd demo: distilling a digits generator", "",
              "Class-conditional DCGAN on scikit-learn's digits (32x32). fd_digits / kid_digits are offline proxy "
              "metrics on gankd's digits LeNet features: lower is better; they compare only with each other, not "
              "with published FID.", "", table, "",
              f"Total time: {seconds / 60:.1f} min on {torch.get_num_threads()} CPU threads. Samples: "
              "samples_teacher.png, samples_distilled.png, samples_scratch.png.", ""]  # fmt: skip
    (demo_dir / "report.md").write_text("\n".join(report))
    (demo_dir / "metrics.json").write_text(json.dumps({"rows": rows, "seconds": seconds}, indent=2) + "\n")
    log(table)
    log(f"wrote {demo_dir / 'report.md'} ({seconds / 60:.1f} min)")
    return {"rows": rows, "dir": str(demo_dir), "seconds": seconds}
