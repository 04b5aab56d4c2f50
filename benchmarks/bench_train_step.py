"""Distillation training-step throughput with the fused loss kernels against the reference losses.

For each workload (a shipped distillation config) it builds the run's Stepper exactly as `gankd distill`
does (student, frozen teacher, adapters, discriminator, optimizers), once per provider, and times whole
optimizer steps on one fixed training batch. The teacher's weights are random: speed does not depend on
them. It also times the distillation loss terms alone (forward + backward on that batch's tapped maps and
outputs; the adversarial term is a network, not a loss kernel, and is left out), so each row says what
share of the step the losses take.

Providers: reference (config.distill.impl=reference, pure PyTorch; everywhere) and fused
(config.distill.impl=triton, the Triton kernels; CUDA only). Rows are appended to
benchmarks/results/train_step.csv: workload, provider, precision, batch, step_ms, images_per_s, loss_ms,
loss_share, device, torch, triton, commit.

    python benchmarks/bench_train_step.py
    python benchmarks/bench_train_step.py --workloads digits_gan --batch 256 --precisions fp32,bf16
"""

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from bench_common import append_rows, environment, time_step
from gankd.config import RunConfig, load_config
from gankd.train.builders import build_dataset, build_model
from gankd.train.distributed import Distributed
from gankd.train.steps import Stepper, build_stepper

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
WORKLOADS = {"digits_gan": "digits_dcgan", "photos_sr": "photos_resnet", "digits_cls": "digits_cnn"}
PROVIDERS = {"reference": "reference", "fused": "triton"}
COLUMNS = ["workload", "provider", "precision", "batch", "step_ms", "images_per_s", "loss_ms", "loss_share",
           "device", "torch", "triton", "commit"]  # fmt: skip


def workload_config(workload: str, provider: str, precision: str, batch: int | None, device: str,
                    overrides: list[str] = ()) -> RunConfig:  # fmt: skip
    family = WORKLOADS[workload]
    settings = [f"distill.impl={PROVIDERS[provider]}", f"precision={precision}", f"device={device}", *overrides]
    if batch is not None:
        settings.append(f"data.batch_size={batch}")
    return load_config(CONFIGS / f"{family}_distill.yaml", settings)


def random_teacher_state(config: RunConfig) -> dict:
    """What build_stepper reads from a teacher run, with random weights: the shipped teacher's architecture."""
    teacher_config = load_config(CONFIGS / f"{config.name.removesuffix('_distill')}_teacher.yaml")
    discriminator = None
    if config.distill.weights.get("adversarial", 0) > 0:
        discriminator = build_model(config.gan.discriminator).state_dict()
    return {"model_config": teacher_config.model, "weights": build_model(teacher_config.model).state_dict(),
            "discriminator": discriminator}  # fmt: skip


def first_batch(config: RunConfig) -> tuple[Tensor, Tensor]:
    dataset = build_dataset(config, "train")
    items = [dataset[index] for index in range(config.data.batch_size)]
    return tuple(torch.stack([torch.as_tensor(item[part]) for item in items]) for part in (0, 1))


def captured_loss_inputs(stepper: Stepper, batch) -> dict:
    """One distillation forward on `batch` with the tapped maps and both outputs kept (forward hooks)."""
    distiller = stepper.distiller
    maps = {"student": {}, "teacher": {}}

    def keep(role: str, path: str):
        def hook(module, args, output) -> None:
            maps[role][path] = output.detach()

        return hook

    handles = []
    for student_path, teacher_path in distiller.feature_pairs:
        for role, model, path in (("student", distiller.student, student_path),
                                  ("teacher", distiller.teacher, teacher_path)):  # fmt: skip
            handles.append(model.get_submodule(path).register_forward_hook(keep(role, path)))
    first, second = (item.to(stepper.device) for item in batch)
    inputs = stepper.generator_inputs(second, 0) if stepper.config.task == "generator" else (first,)
    try:
        with torch.no_grad(), stepper.autocast():
            student_output = distiller.student(*inputs)
            teacher_output = distiller.teacher(*inputs)
    finally:
        for handle in handles:
            handle.remove()
    return dict(maps=maps, student_output=student_output.detach(), teacher_output=teacher_output.detach(),
                second=second)  # fmt: skip


def loss_terms_step(stepper: Stepper, captured: dict):
    """A callable: the weighted distillation loss terms forward + backward on the captured tensors (it returns
    their detached total)."""
    distiller, weights = stepper.distiller, stepper.distiller.weights

    def step() -> Tensor:
        student_output = captured["student_output"].clone().requires_grad_(True)
        student_maps = {path: map_.clone().requires_grad_(True) for path, map_ in captured["maps"]["student"].items()}
        teacher_output, teacher_maps = captured["teacher_output"], captured["maps"]["teacher"]
        second = captured["second"]
        total = student_output.new_zeros((), dtype=torch.float32)
        with stepper.autocast():
            if "output" in weights:
                total = total + weights["output"] * distiller.output_loss(student_output, teacher_output)
            if "ground_truth" in weights:
                total = total + weights["ground_truth"] * F.l1_loss(student_output.float(), second.float())
            if "kd" in weights:
                total = total + weights["kd"] * distiller.kd_loss(student_output, teacher_output)
            if "ce" in weights:
                total = total + weights["ce"] * F.cross_entropy(student_output.float(), second)
            for index, (student_path, teacher_path) in enumerate(distiller.feature_pairs):
                student_map, teacher_map = student_maps[student_path], teacher_maps[teacher_path]
                if "feature" in weights:
                    total = total + weights["feature"] * distiller.feature_loss(student_map, teacher_map)
                if "adapted" in weights:
                    total = total + weights["adapted"] * distiller.adapters[index](student_map, teacher_map)
                if "attention" in weights:
                    total = total + weights["attention"] * distiller.attention_loss(student_map, teacher_map)
        total.backward()
        return total.detach()

    return step


def measure(workload: str, provider: str, precision: str, batch: int | None, device: torch.device, reps: int,
            overrides: list[str]) -> dict:  # fmt: skip
    config = workload_config(workload, provider, precision, batch, str(device), overrides)
    stepper = build_stepper(config, Distributed(device=device), random_teacher_state(config))
    data = first_batch(config)
    counter = iter(range(10**9))
    step_ms = time_step(lambda: stepper.step(data, next(counter)), device, reps)
    loss_ms = time_step(loss_terms_step(stepper, captured_loss_inputs(stepper, data)), device, reps)
    batch_size = config.data.batch_size
    return dict(workload=workload, provider=provider, precision=precision, batch=batch_size, step_ms=f"{step_ms:.4g}",
                images_per_s=f"{batch_size / step_ms * 1e3:.4g}", loss_ms=f"{loss_ms:.4g}",
                loss_share=f"{loss_ms / step_ms:.3f}")  # fmt: skip


def describe(row: dict) -> str:
    return (f"{row['workload']:11s} {row['provider']:9s} {row['precision']:5s} batch {row['batch']:>4}: "
            f"step {row['step_ms']:>8s} ms, {row['images_per_s']:>8s} img/s; "
            f"losses {row['loss_ms']:>8s} ms ({float(row['loss_share']):.0%} of the step)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help=f"from {', '.join(WORKLOADS)}")
    parser.add_argument("--providers", default=",".join(PROVIDERS), help=f"from {', '.join(PROVIDERS)}")
    parser.add_argument("--precisions", default=None, help="from fp32, bf16, fp16 (default fp32; fp32,bf16 on CUDA)")
    parser.add_argument("--batch", type=int, default=None, help="batch size (default: each config's)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE",
                        help="override every workload's config (e.g. distill.weights={output: 1.0})")  # fmt: skip
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--reps", type=int, default=10, help="timed repetitions on CPU (CUDA uses do_bench)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "train_step.csv")
    args = parser.parse_args()

    device = torch.device(args.device)
    precisions = (args.precisions or ("fp32,bf16" if device.type == "cuda" else "fp32")).split(",")
    workloads, providers = args.workloads.split(","), args.providers.split(",")
    for name, chosen, valid in (("--workloads", workloads, WORKLOADS), ("--providers", providers, PROVIDERS),
                                ("--precisions", precisions, ("fp32", "bf16", "fp16"))):  # fmt: skip
        unknown = [item for item in chosen if item not in valid]
        if unknown:
            raise SystemExit(f"{name}: unknown {unknown}; choose from {', '.join(valid)}")
    if args.batch is not None and args.batch < 1:
        raise SystemExit(f"--batch must be >= 1, got {args.batch}")
    env = environment(device)
    print(f"device: {env['device']}")
    if device.type != "cuda" and "fused" in providers:
        providers.remove("fused")
        print("not measured here: fused (the Triton kernels run compiled on CUDA only)")

    for workload in workloads:
        for precision in precisions:
            for provider in providers:
                row = measure(workload, provider, precision, args.batch, device, args.reps, args.set) | env
                append_rows(args.out, [row], COLUMNS)
                print(describe(row))
    print(f"appended rows to {args.out}")


if __name__ == "__main__":
    main()
