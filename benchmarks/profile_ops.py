"""Where a fused op's time goes on a GPU: every device kernel of one forward+backward, from torch.profiler.

For each case (op, dtype, shape) it runs the gankd op a few times to warm up, then profiles REPEATS calls
and reports, per call: each GPU kernel or memory operation (Triton kernels, torch's own small kernels,
memsets, copies) with its launches and device time, the device time in all, and the host (wall) time of
one call. A call whose host time is far above its device time is bound by the launch path; a kernel far
above its byte floor is the one to tune. Rows go to --out (CSV); the tables are printed.

    python -m benchmarks.profile_ops --out /tmp/profile.csv
    python -m benchmarks.profile_ops --cases softmax_kl:bf16:256x1000 --out /tmp/p.csv
"""

import argparse
import csv
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from benchmarks.bench_common import DTYPES, ENVIRONMENT_COLUMNS, cuda_device_or_exit, environment, parse_shapes
from gankd.kernels import adapted_feature_match, attention_transfer, feature_match, softmax_kl

DEFAULT_CASES = (
    "softmax_kl:bf16:256x1000,softmax_kl:bf16:4096x32768,softmax_kl:bf16:16x262144,"
    "feature_match:bf16:32x512x64x64,feature_match:fp32:32x512x64x64,feature_match:fp32:16x512x32x32,"
    "attention_transfer:bf16:32x512x64x64,adapted_feature_match:bf16:16x128x512x64x64"
)
REPEATS = 5
COLUMNS = ["op", "dtype", "shape", "host_ms", "kernel", "launches", "device_us", *ENVIRONMENT_COLUMNS]


def make_call(op: str, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device):
    """A forward+backward of the op with impl="triton" on fresh random inputs of `shape`."""
    randn = lambda *size: torch.randn(*size, device=device, dtype=dtype)  # noqa: E731
    if op == "softmax_kl":
        student, teacher = randn(*shape), randn(*shape)
        loss_of = lambda s: softmax_kl(s, teacher, 2.0, impl="triton")  # noqa: E731
    elif op in ("feature_match", "attention_transfer"):
        student, teacher = randn(*shape), randn(*shape)
        fn = feature_match if op == "feature_match" else attention_transfer
        loss_of = lambda s: fn(s, teacher, impl="triton")  # noqa: E731
    elif op == "adapted_feature_match":
        n, cs, ct, h, w = shape
        student, teacher = randn(n, cs, h, w), randn(n, ct, h, w)
        weight = (torch.randn(ct, cs, 1, 1, device=device) / cs**0.5).to(dtype).requires_grad_(True)
        loss_of = lambda s: adapted_feature_match(s, teacher, weight, impl="triton")  # noqa: E731
    else:
        raise SystemExit(f"unknown op {op!r}; choose from softmax_kl, feature_match, attention_transfer, "
                         "adapted_feature_match")  # fmt: skip
    student.requires_grad_(True)

    def call():
        student.grad = None
        loss_of(student).backward()

    return call


def profile_case(call, device: torch.device) -> tuple[list[dict], float]:
    """(per-kernel rows per call, host ms per call) of REPEATS profiled calls after a warm-up."""
    for _ in range(3):
        call()
    torch.cuda.synchronize(device)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        start = time.perf_counter()
        for _ in range(REPEATS):
            call()
        host_ms = (time.perf_counter() - start) * 1e3 / REPEATS
        torch.cuda.synchronize(device)
    rows = []
    for event in prof.key_averages():
        device_us = getattr(event, "self_device_time_total", 0.0) or getattr(event, "self_cuda_time_total", 0.0)
        if device_us > 0 and event.device_type.name == "CUDA":
            rows.append(dict(kernel=event.key[:90], launches=event.count / REPEATS, device_us=device_us / REPEATS))
    return sorted(rows, key=lambda row: -row["device_us"]), host_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default=DEFAULT_CASES, help="op:dtype:shape list")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    device = cuda_device_or_exit("profile_ops", "profiles the compiled kernels")
    env = environment(device)
    out_rows = []
    for case in args.cases.split(","):
        op, dtype_name, shape_text = case.split(":")
        (shape,) = parse_shapes(shape_text)
        rows, host_ms = profile_case(make_call(op, shape, DTYPES[dtype_name], device), device)
        device_ms = sum(row["device_us"] for row in rows) / 1e3
        print(f"\n{op} {dtype_name} {shape_text}: host {host_ms:.3f} ms per call, device {device_ms:.3f} ms")
        for row in rows:
            print(f"  {row['launches']:4.1f} x {row['device_us']:10.1f} us  {row['kernel']}")
        out_rows += [dict(op=op, dtype=dtype_name, shape=shape_text, host_ms=host_ms, **row, **env) for row in rows]
        torch.cuda.empty_cache()
    if not out_rows:
        raise SystemExit("the profiler recorded no GPU activity")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(out_rows)


if __name__ == "__main__":
    main()
