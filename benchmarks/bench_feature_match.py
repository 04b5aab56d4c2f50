"""Benchmark feature_match (mse, cosine) and attention_transfer forward+backward.

Providers: reference (eager), torch.compile(reference), gankd Triton (CUDA only). Rows are appended to
benchmarks/results/kernels.csv with the columns of bench_softmax_kl.py. Bytes counted per op, the
least its algorithm must move:
- feature_match: read student and teacher, write the student gradient: 3 · |s| · bytes.
- attention_transfer: forward reads student and teacher once, backward re-reads the student and writes its
  gradient: (3 · |s| + |t|) · bytes (the small [N, P] maps are negligible).

    python -m benchmarks.bench_feature_match
    python -m benchmarks.bench_feature_match --shapes 2x16x16x16 --dtypes fp32 --providers reference
"""

import argparse
import math
from collections.abc import Callable

import torch

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
from gankd.kernels import attention_transfer, attention_transfer_ref, feature_match, feature_match_ref

DEFAULT_SHAPES = "32x512x64x64,16x512x32x32"
CPU_ELEMENT_LIMIT = 4 * 64 * 32 * 32  # the CPU runs 4x64x32x32 and 4x128x16x16 unless --shapes says otherwise
CPU_SHAPES = "4x64x32x32,4x128x16x16"
PROVIDERS = ("gankd_triton", "reference", "torch_compile")  # torch.compile last: the slowest to set up
OPS = ("feature_match_mse", "feature_match_cosine", "attention_transfer")


def loss_of(op: str, provider: str) -> Callable:
    """loss(student, teacher) for an op and a provider."""
    if op == "attention_transfer":
        if provider == "gankd_triton":
            return lambda s, t: attention_transfer(s, t, impl="triton")
        return attention_transfer_ref
    kind = op.removeprefix("feature_match_")
    if provider == "gankd_triton":
        return lambda s, t: feature_match(s, t, kind=kind, impl="triton")
    return lambda s, t: feature_match_ref(s, t, kind=kind)


def bytes_moved(op: str, student: torch.Tensor, teacher: torch.Tensor) -> int:
    if op == "attention_transfer":
        return (3 * student.numel() + teacher.numel()) * student.element_size()
    return 3 * student.numel() * student.element_size()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser, shapes_help=f"NxCxHxW list (default {DEFAULT_SHAPES}; {CPU_SHAPES} on CPU)",
                         providers=PROVIDERS)  # fmt: skip
    parser.add_argument("--ops", default=",".join(OPS), help=f"from {', '.join(OPS)}")
    args = parser.parse_args()

    device = torch.device(args.device)
    default = DEFAULT_SHAPES if device.type == "cuda" else CPU_SHAPES
    shapes = shapes_for_device(args.shapes, default, device, math.prod, CPU_ELEMENT_LIMIT)
    env = environment(device)
    bandwidth = copy_bandwidth_gbps(device)
    print(f"device: {env['device']}  measured copy bandwidth: {bandwidth:.1f} GB/s")

    count, missing = 0, []
    for provider in args.providers.split(","):
        if provider not in PROVIDERS:
            raise SystemExit(f"unknown provider {provider!r}; choose from {PROVIDERS}")
        if provider == "gankd_triton" and device.type != "cuda":
            missing.append(provider)
            continue
        for op in args.ops.split(","):
            if op not in OPS:
                raise SystemExit(f"unknown op {op!r}; choose from {OPS}")
            for dtype_name in args.dtypes.split(","):
                for shape in shapes:
                    loss_fn = compiled(loss_of(op, provider)) if provider == "torch_compile" else loss_of(op, provider)
                    torch.manual_seed(0)
                    student = torch.randn(shape, device=device, dtype=DTYPES[dtype_name]).requires_grad_(True)
                    teacher = torch.randn(shape, device=device, dtype=DTYPES[dtype_name])
                    moved = bytes_moved(op, student, teacher)
                    timing = measure(loss_fn, (student, teacher), device, args.reps, moved, bandwidth)
                    row = dict(kernel=op, provider=provider, dtype=dtype_name, shape="x".join(map(str, shape)),
                               **timing, **env)  # fmt: skip
                    record(args.out, row)
                    count += 1
                    del student, teacher
    finish(args.out, count, missing, "needs a CUDA device")


if __name__ == "__main__":
    main()
