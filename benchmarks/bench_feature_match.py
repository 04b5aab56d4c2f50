"""Benchmark feature_match (mse, cosine) and attention_transfer forward+backward.

Providers: reference (eager), torch.compile(reference), gankd Triton (CUDA only). Rows are appended to
benchmarks/results/kernels.csv with the columns of bench_softmax_kl.py. Bytes counted per op, the
least its algorithm must move:
- feature_match: read student and teacher, write the student gradient: 3 · |s| · bytes.
- attention_transfer: forward reads student and teacher once, backward re-reads the student and writes its
  gradient: (3 · |s| + |t|) · bytes (the small [N, P] maps are negligible).

    python benchmarks/bench_feature_match.py
    python benchmarks/bench_feature_match.py --shapes 2x16x16x16 --dtypes fp32 --providers reference
"""

import argparse
from collections.abc import Callable
from pathlib import Path

import torch

from bench_common import DTYPES, append_rows, compiled, copy_bandwidth_gbps, environment, measure, parse_shapes
from gankd.kernels import attention_transfer, attention_transfer_ref, feature_match, feature_match_ref

DEFAULT_SHAPES = "16x256x64x64,16x512x32x32"
CPU_SHAPES = "4x64x32x32,4x128x16x16"
PROVIDERS = ("reference", "torch_compile", "gankd_triton")
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
    parser.add_argument("--shapes", default=None, help=f"NxCxHxW list (default {DEFAULT_SHAPES}; {CPU_SHAPES} on CPU)")
    parser.add_argument("--dtypes", default="bf16,fp32", help="from fp32, bf16, fp16")
    parser.add_argument("--ops", default=",".join(OPS), help=f"from {', '.join(OPS)}")
    parser.add_argument("--providers", default=",".join(PROVIDERS), help=f"from {', '.join(PROVIDERS)}")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--reps", type=int, default=5, help="timed repetitions on CPU (CUDA uses do_bench)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "kernels.csv")
    args = parser.parse_args()

    device = torch.device(args.device)
    shapes = parse_shapes(args.shapes or (DEFAULT_SHAPES if device.type == "cuda" else CPU_SHAPES))
    env = environment(device)
    bandwidth = copy_bandwidth_gbps(device)
    print(f"device: {env['device']}  measured copy bandwidth: {bandwidth:.1f} GB/s")

    rows, missing = [], []
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
                    rows.append(measure(op, provider, dtype_name, loss_fn, student, teacher,
                                        bytes_moved(op, student, teacher), bandwidth, env, args.reps))  # fmt: skip
                    del student, teacher
    append_rows(args.out, rows)
    print(f"appended {len(rows)} rows to {args.out}")
    if missing:
        print(f"not measured here: {', '.join(missing)} (needs a CUDA device)")


if __name__ == "__main__":
    main()
