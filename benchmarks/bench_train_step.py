"""Distillation training-step throughput with the fused loss kernels against the reference losses.

For each workload (a shipped distillation config, with the terms of WORKLOAD_TERMS where it names them) it
builds the run's objective and Stepper exactly as `gankd distill` does (student, frozen teacher, adapters,
discriminator, optimizers), once per provider, and times whole optimizer steps on one fixed training batch.
The teacher's weights are random: speed does not depend on them. It also times the loss terms alone — the
same term objects, through the Distiller's `compute_terms`, forward + backward on that batch's captured
outputs and tapped maps (the adversarial term includes its discriminator forward) — so each row says what
share of the step the losses take.

Providers: reference (config impl=reference, pure PyTorch; everywhere) and fused (impl=triton, the Triton
kernels; CUDA only). Rows are appended to benchmarks/results/train_step.csv: workload, provider,
precision, batch, step_ms, images_per_s, loss_ms, loss_share, device, torch, triton, commit.

    python -m benchmarks.bench_train_step
    python -m benchmarks.bench_train_step --workloads digits_gan --batch 256 --precisions fp32,bf16
"""

import argparse
import dataclasses
from pathlib import Path

import torch
from torch import Tensor

from benchmarks.bench_common import ENVIRONMENT_COLUMNS, append_rows, environment, time_step
from gankd import configs
from gankd.config import RunConfig, load_config
from gankd.train.builders import build_dataset, build_model
from gankd.train.distributed import Distributed
from gankd.train.objective import build_objective
from gankd.train.stepper import Stepper
from gankd.train.teacher import Teacher

WORKLOADS = {"digits_gan": "digits_dcgan", "photos_sr": "photos_resnet", "digits_cls": "digits_cnn"}
# The digits generator workload times GAN Compression's objective (output, 1x1-adapter features, adversarial), so
# its step runs every fused kernel of a generator distillation; the shipped digits recipe leaves the feature term
# out (it cost quality there: the README's ablation), which would leave adapted_feature_match untimed.
WORKLOAD_TERMS = {
    "digits_gan": "{output: {weight: 1.0, kind: l1}, adapted: {weight: 1.0, pairs: {stem: stem, blocks.0: blocks.0, "
    "blocks.1: blocks.1}}, adversarial: {weight: 0.01, loss: nonsaturating}}"
}
PROVIDERS = {"reference": "reference", "fused": "triton"}
COLUMNS = ["workload", "provider", "precision", "batch", "step_ms", "images_per_s", "loss_ms", "loss_share",
           *ENVIRONMENT_COLUMNS]  # fmt: skip


def workload_config(workload: str, provider: str, precision: str, batch: int | None, device: str,
                    overrides: list[str] = ()) -> RunConfig:  # fmt: skip
    terms = [f"terms={WORKLOAD_TERMS[workload]}"] if workload in WORKLOAD_TERMS else []
    settings = [f"impl={PROVIDERS[provider]}", f"precision={precision}", f"device={device}", *terms, *overrides]
    if batch is not None:
        settings.append(f"data.batch_size={batch}")
    return load_config(configs.path(f"{WORKLOADS[workload]}_distill"), settings)


def random_teacher(config: RunConfig) -> Teacher:
    """A teacher as build_objective takes it, with random weights: the shipped teacher's architecture (and a
    discriminator warm start, used only when the objective trains one)."""
    teacher_config = load_config(configs.path(f"{config.name.removesuffix('_distill')}_teacher"))
    discriminator = build_model(config.gan.discriminator).state_dict()
    model = build_model(teacher_config.model).eval()
    return Teacher(model, lambda module: module.load_state_dict(discriminator), teacher_config.model)


def first_batch(config: RunConfig) -> tuple[Tensor, Tensor]:
    dataset = build_dataset(config, "train", training=True)
    items = [dataset[index] for index in range(config.data.batch_size)]
    return tuple(torch.stack([torch.as_tensor(item[part]) for item in items]) for part in (0, 1))


def loss_terms_step(stepper: Stepper, data: tuple[Tensor, Tensor]):
    """A callable: the Distiller's terms forward + backward on the tensors one step of `data` gives them (its
    outputs and tapped maps captured once); it returns their detached total."""
    distiller = stepper.distiller
    items = tuple(part.to(stepper.device) for part in data)
    with stepper.autocast():
        captured = distiller.capture(stepper.task.from_data(items, stepper.model, stepper.noise(0, 0, len(items[0]))))
    if distiller.discriminator is not None:
        distiller.discriminator.requires_grad_(False)  # as in the student's phase: input gradients only

    def step() -> Tensor:
        student_features = {path: tensor.clone().requires_grad_(True)
                            for path, tensor in captured.student_features.items()}  # fmt: skip
        output = captured.student_output.clone().requires_grad_(True)
        with stepper.autocast():
            terms = distiller.compute_terms(dataclasses.replace(captured, student_output=output,
                                                                student_features=student_features))  # fmt: skip
        terms.total.backward()
        return terms.total.detach()

    return step


def measure(workload: str, provider: str, precision: str, batch: int | None, device: torch.device, reps: int,
            overrides: list[str]) -> dict:  # fmt: skip
    config = workload_config(workload, provider, precision, batch, str(device), overrides)
    dist = Distributed(device=device)
    stepper = Stepper(config, dist, build_objective(config, dist, random_teacher(config)))
    data = first_batch(config)
    counter = iter(range(10**9))
    step_ms = time_step(lambda: stepper.step([data], next(counter)), device, reps)
    loss_ms = time_step(loss_terms_step(stepper, data), device, reps)
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
                        help="override every workload's config (e.g. terms={output: 1.0})")  # fmt: skip
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
