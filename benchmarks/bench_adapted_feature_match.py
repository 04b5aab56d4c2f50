"""Benchmark adapted_feature_match forward+backward: eager conv1x1 + mse_loss, torch.compile(reference), gankd Triton.

Appends long-format rows to benchmarks/results/kernels.csv (same columns as bench_softmax_kl.py). Shapes are
N x Cs x Ct x H x W: the student map [N, Cs, H, W] goes through a learned 1x1 adapter (weight and bias get
gradients) and is matched to the teacher [N, Ct, H, W] with mse. Bandwidth counts the minimum bytes a fused
forward+backward must move: read student and teacher, write the student gradient, plus the adapter's
weight and bias read and their gradients written; it is compared with the copy bandwidth measured in the
same run. On a machine without CUDA only the eager and compiled providers run, and the script says which
rows are missing.

    python -m benchmarks.bench_adapted_feature_match                # the issue's shape and a small one
    python -m benchmarks.bench_adapted_feature_match --shapes 2x8x16x8x8 --dtypes fp32 --providers eager
"""

import argparse
from collections.abc import Callable

import torch
import torch.nn.functional as F

from benchmarks.bench_common import (
    DTYPES,
    add_common_arguments,
    compiled,
    copy_bandwidth_gbps,
    environment,
    finish,
    measure,
    record,
    shapes_for_device,
)
from gankd.kernels import adapted_feature_match, adapted_feature_match_ref

DEFAULT_SHAPES = "4x32x64x32x32,16x128x512x64x64"
# On a CPU the shape takes seconds per call and GBs of memory: default to the small shapes.
CPU_ELEMENT_LIMIT = 4 * 64 * 64 * 64
PROVIDERS = ("gankd_triton", "eager", "torch_compile")  # torch.compile last: the slowest to set up


def make_provider(name: str, device: torch.device) -> Callable | None:
    """A loss function (student, teacher, weight, bias) -> scalar for the provider, or None when it cannot run."""
    if name == "eager":  # what distillation code does today: the adapter as a conv, then the loss
        return lambda s, t, w, b: F.mse_loss(F.conv2d(s, w, b), t).float()
    if name == "torch_compile":
        return compiled(adapted_feature_match_ref)
    if name == "gankd_triton":
        return (lambda s, t, w, b: adapted_feature_match(s, t, w, b, impl="triton")) if device.type == "cuda" else None
    raise ValueError(f"unknown provider {name!r}; choose from {PROVIDERS}")


def teacher_elements(shape: tuple[int, ...]) -> int:
    n_samples, _, n_teacher, height, width = shape
    return n_samples * n_teacher * height * width


def minimum_bytes(student: torch.Tensor, teacher: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> int:
    """Read student and teacher, write the student gradient; read weight and bias, write their gradients."""
    maps = (2 * student.numel() + teacher.numel()) * student.element_size()
    return maps + 2 * (weight.numel() + bias.numel()) * weight.element_size()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser, shapes_help=f"NxCsxCtxHxW list (default {DEFAULT_SHAPES}; smaller on CPU)",
                         providers=PROVIDERS)  # fmt: skip
    args = parser.parse_args()

    device = torch.device(args.device)
    shapes = shapes_for_device(args.shapes, DEFAULT_SHAPES, device, teacher_elements, CPU_ELEMENT_LIMIT)
    if any(len(shape) != 5 for shape in shapes):
        raise SystemExit(f"--shapes must be N x Cs x Ct x H x W, e.g. 16x128x512x64x64, got {args.shapes!r}")
    env = environment(device)
    bandwidth = copy_bandwidth_gbps(device)
    print(f"device: {env['device']}  measured copy bandwidth: {bandwidth:.1f} GB/s")

    count, missing = 0, []
    for provider in args.providers.split(","):
        if make_provider(provider, device) is None:
            missing.append(provider)
            continue
        for dtype_name in args.dtypes.split(","):
            dtype = DTYPES[dtype_name]
            for n_samples, n_student, n_teacher, height, width in shapes:
                loss_fn = make_provider(provider, device)  # afresh per case: compiled providers recompile cleanly
                torch.manual_seed(0)
                student = torch.randn(n_samples, n_student, height, width, device=device, dtype=dtype)
                teacher = torch.randn(n_samples, n_teacher, height, width, device=device, dtype=dtype)
                adapter = torch.nn.Conv2d(n_student, n_teacher, 1, device=device, dtype=dtype)
                inputs = (student.requires_grad_(True), teacher, adapter.weight, adapter.bias)
                shape = f"{n_samples}x{n_student}x{n_teacher}x{height}x{width}"
                timing = measure(loss_fn, inputs, device, args.reps, minimum_bytes(*inputs), bandwidth)
                row = dict(kernel="adapted_feature_match", provider=provider, dtype=dtype_name, shape=shape, **timing,
                           **env)  # fmt: skip
                record(args.out, row)
                count += 1
                del student, teacher, adapter, inputs
    finish(args.out, count, missing, "needs a CUDA device")


if __name__ == "__main__":
    main()
