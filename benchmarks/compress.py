"""Compression results: teacher, scratch student and distilled student of each shipped task, over seeds.

For every task and seed it trains the teacher, the scratch student, the distilled student and the distilled
student initialised from the teacher (pruned to its widths) from the shipped configs (the same budget for
every student), then appends long-format rows to
benchmarks/results/compression.csv: task, variant, seed, metric, value, device, commit. Metrics: params,
MACs, CPU latency at batch 1 and 64 (ms), and the task's quality metrics (fd_digits/kid_digits for the
digits generator, psnr/ssim for super-resolution, accuracy/agreement for the classifier; standard fid/kid
and lpips as well when their weights are on the machine, see gankd.metrics.weights). Super-resolution
also gets `bicubic` rows: psnr/ssim of plain bicubic upsampling, the floor a learned model has to beat.

    python -m benchmarks.compress                                  # all tasks, seeds 0 1 2
    python -m benchmarks.compress --tasks digits_gan --seeds 0 --set steps=100   # a quick look
    python -m benchmarks.compress --variants distilled_init        # only the students initialised from the teacher
    python -m benchmarks.compress --ablation                       # digits: which distillation terms help

`--ablation` trains the digits student with the distillation terms added one at a time (results_table.py's
ABLATION_TERMS), next to the scratch student, reusing the teachers and scratch runs of the same seeds, and
appends the rows to benchmarks/results/ablation.csv (variant = the term set).
"""

import argparse
import json
import time
from pathlib import Path

import torch
import yaml
from torch import nn

import gankd.data
from benchmarks.bench_common import append_rows, environment
from benchmarks.results_table import ABLATION_FEATURE_PAIRS, ABLATION_TERMS
from gankd import configs
from gankd.config import load_config, with_absolute_paths
from gankd.distill.terms import term_options
from gankd.metrics import evaluate_paired
from gankd.train import run_directory, train
from gankd.train.demo import measure_run
from gankd.weights import INCEPTION_V3, LPIPS_BACKBONES, MetricWeightsError, resolve_weights

TASKS = {
    "digits_gan": "digits_dcgan",
    "photos_sr": "photos_resnet",
    "digits_cls": "digits_cnn",
    "photos_sr_gan": "photos_resnet_gan",
}
# Tasks whose tables get `bicubic` rows (super-resolution: the floor a learned model has to beat).
BICUBIC_TASKS = ("photos_sr", "photos_sr_gan")
# Variant → the shipped config it trains. "distilled_init" is the distilled student that starts as the teacher
# pruned to its widths (distill.student_init: teacher) instead of from random weights.
VARIANTS = {"teacher": "teacher", "scratch": "scratch", "distilled": "distill", "distilled_init": "distill"}
COLUMNS = ["task", "variant", "seed", "metric", "value", "device", "commit"]
# Standard metrics added to a task's evaluation when their weights are on this machine (never downloaded).
STANDARD_METRICS = {
    "digits_gan": (INCEPTION_V3, ["fid", "kid"]),
    "photos_sr": (LPIPS_BACKBONES["alex"], ["lpips"]),
    "photos_sr_gan": (LPIPS_BACKBONES["alex"], ["lpips"]),
}
# The classifier students learn in a limited-label setting: labels for 10 digits per class (100 of the 1,438
# training images); the teacher was trained on the whole labelled train split. Scratch trains on the 100 labelled
# images (cross-entropy has no use for the others); the distilled students also see the other 1,338 without their
# labels, where the teacher's soft targets are the only signal (semi-supervised distillation).
STUDENT_OVERRIDES = {"digits_cls": ["data.limit_per_class=10"]}
DISTILLED_OVERRIDES = {"digits_cls": ["data.keep_unlabelled=true"]}


def standard_metrics(task: str) -> list[str]:
    """The standard metrics (fid/kid, lpips) of `task` whose verified local weights this machine has."""
    if task not in STANDARD_METRICS:
        return []
    weights, names = STANDARD_METRICS[task]
    try:
        resolve_weights(weights)
    except MetricWeightsError:
        return []
    return names


def run_variant(task: str, variant: str, seed: int, work_dir: Path, overrides: list[str]) -> Path:
    """Train one variant (reusing a finished run in work_dir) and return its run directory. `variant` is a key
    of VARIANTS, or of ABLATION_TERMS (the distilled student with those terms)."""
    family = TASKS[task]
    ablation = variant in ABLATION_TERMS
    name = f"{family}_{VARIANTS['distilled' if ablation else variant]}"
    extra = [f"seed={seed}", f"output_dir={work_dir / f'seed{seed}'}", *overrides]
    if variant != "teacher":
        extra += STUDENT_OVERRIDES.get(task, [])
    if VARIANTS.get(variant) == "distill" or ablation:
        extra.append(f"distill.teacher={work_dir / f'seed{seed}' / f'{family}_teacher'}")
        extra += DISTILLED_OVERRIDES.get(task, [])
    if variant == "distilled_init":
        extra += [f"name={family}_distill_init", "distill.student_init=teacher"]
    if ablation:
        slug = variant.removeprefix("+")
        extra += [f"name={family}_ablation_{slug}", f"terms={ablation_terms(variant)}"]
    config = load_config(configs.path(name), extra)
    config.eval.metrics = config.eval.metrics + [m for m in standard_metrics(task) if m not in config.eval.metrics]
    run = run_directory(config)
    if (run / "metrics.json").is_file() and load_config(run / "config.yaml") != with_absolute_paths(
        config, gankd.data.path_options(config.data.name)
    ):
        raise SystemExit(f"{run} was trained from a different config than the shipped one now gives; "
                         "remove it or pass another --work-dir")  # fmt: skip
    if not (run / "metrics.json").is_file():
        print(f"[{task} seed {seed}] training {variant} ({config.steps} steps) -> {run}", flush=True)
        train(config)
    return run


def ablation_terms(variant: str) -> str:
    """The `terms` of an ablation variant as YAML: its weights, with the shipped digits recipe's options for the
    terms that recipe has and ABLATION_FEATURE_PAIRS for the feature terms."""
    shipped = load_config(configs.path("digits_dcgan_distill")).terms
    terms = {}
    for name, weight in yaml.safe_load(ABLATION_TERMS[variant]).items():
        source = shipped.get(name, {"pairs": ABLATION_FEATURE_PAIRS})
        terms[name] = {**term_options(name, source), "weight": weight}
    return json.dumps(terms)  # JSON is YAML: --set reads it as it is, in order


def bicubic_quality() -> dict:
    """PSNR and SSIM of plain bicubic upsampling on the super-resolution test tiles: the floor a learned
    super-resolution model has to beat (the photos_sr low-res inputs are bicubic downscales)."""
    test = gankd.data.build("photos_sr", split="test", scale=4)
    return evaluate_paired(nn.Upsample(scale_factor=4, mode="bicubic"), test)["metrics"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS),
                        help="variants to train and measure (distilled ones train their teacher first)")  # fmt: skip
    parser.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE",
                        help="override every run's config (e.g. steps=100 for a quick look)")  # fmt: skip
    parser.add_argument("--work-dir", type=Path, default=Path("runs/compress"), help="where the runs go")
    parser.add_argument("--ablation", action="store_true", help="the digits ablation instead (see above)")
    parser.add_argument("--out", type=Path, default=None,
                        help="default: benchmarks/results/compression.csv (ablation.csv with --ablation)")  # fmt: skip
    args = parser.parse_args()
    if args.ablation:
        args.tasks, variants = ["digits_gan"], ("teacher", "scratch", *ABLATION_TERMS)
    else:
        variants = tuple(args.variants)
    args.out = args.out or Path(__file__).parent / "results" / ("ablation.csv" if args.ablation else "compression.csv")

    torch.set_num_threads(torch.get_num_threads())
    env = environment(torch.device("cpu"))
    for task in args.tasks:
        for seed in args.seeds:
            started = time.perf_counter()
            for variant in variants + (("bicubic",) if task in BICUBIC_TASKS and not args.ablation else ()):
                if variant == "bicubic":
                    values = bicubic_quality()
                else:
                    values = measure_run(run_variant(task, variant, seed, args.work_dir / task, args.set))
                rows = [dict(task=task, variant=variant, seed=seed, metric=metric, value=value, device=env["device"],
                             commit=env["commit"]) for metric, value in values.items()]  # fmt: skip
                append_rows(args.out, rows, COLUMNS)
            print(f"[{task} seed {seed}] done in {(time.perf_counter() - started) / 60:.1f} min", flush=True)
    print(f"appended rows to {args.out}")


if __name__ == "__main__":
    main()
