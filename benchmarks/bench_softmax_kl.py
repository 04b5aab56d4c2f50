"""Benchmark softmax_kl forward+backward: reference (eager), torch.compile(reference), gankd Triton, Liger-Kernel.

Appends long-format rows to benchmarks/results/kernels.csv. Bandwidth counts the 3·N·V·bytes a fused
forward+backward must move (read student, read teacher, write the student gradient) and is compared with
the device's copy bandwidth measured in the same run. On a machine without CUDA only the reference
providers run, and the script says which rows are missing.

    python -m benchmarks.bench_softmax_kl                       # the issue's shapes, bf16 and fp32
    python -m benchmarks.bench_softmax_kl --shapes 256x1000 --dtypes fp32 --providers reference
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
from gankd.kernels import softmax_kl, softmax_kl_ref

DEFAULT_SHAPES = "256x1000,4096x32768,16384x32768,8192x131072,16x262144"
# On a CPU the largest shapes would take minutes per call and tens of GB: default to these.
CPU_ELEMENT_LIMIT = 4096 * 32768
# Measured in this order: a run stopped at its time limit loses the slow-to-compile torch.compile rows first.
PROVIDERS = ("gankd_triton", "reference", "liger", "torch_compile")
TEMPERATURE = 2.0


def make_provider(name: str, device: torch.device) -> Callable | None:
    """A loss function (student, teacher) -> scalar for the provider, or None when it cannot run here."""
    if name == "reference":
        return lambda s, t: softmax_kl_ref(s, t, TEMPERATURE)
    if name == "torch_compile":
        return compiled(lambda s, t: softmax_kl_ref(s, t, TEMPERATURE))
    if name == "gankd_triton":
        return (lambda s, t: softmax_kl(s, t, TEMPERATURE, impl="triton")) if device.type == "cuda" else None
    if name == "liger":
        if device.type != "cuda":
            return None
        try:
            from liger_kernel.transformers import LigerKLDIVLoss
        except ImportError:
            return None
        liger_kl = LigerKLDIVLoss(reduction="batchmean", log_target=True)

        # Liger's KL takes log-probabilities (input = student, target = teacher): softmax, temperature
        # and T^2 are the caller's, done here with eager log_softmax as its users must.
        def liger_loss(s, t):
            log_ps = torch.log_softmax(s.float() / TEMPERATURE, -1)
            log_pt = torch.log_softmax(t.float() / TEMPERATURE, -1)
            return TEMPERATURE**2 * liger_kl(log_ps, log_pt)

        return liger_loss
    raise ValueError(f"unknown provider {name!r}; choose from {PROVIDERS}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser, shapes_help=f"NxV list (default {DEFAULT_SHAPES}; smaller on CPU)",
                         providers=PROVIDERS)  # fmt: skip
    args = parser.parse_args()

    device = torch.device(args.device)
    shapes = shapes_for_device(args.shapes, DEFAULT_SHAPES, device, math.prod, CPU_ELEMENT_LIMIT)
    dtypes = [DTYPES[name] for name in args.dtypes.split(",")]
    env = environment(device)
    bandwidth = copy_bandwidth_gbps(device)
    print(f"device: {env['device']}  measured copy bandwidth: {bandwidth:.1f} GB/s")

    count, missing = 0, []
    for provider in args.providers.split(","):
        if make_provider(provider, device) is None:
            missing.append(provider)
            continue
        for dtype_name, dtype in zip(args.dtypes.split(","), dtypes, strict=True):
            for n_rows, n_classes in shapes:
                loss_fn = make_provider(provider, device)  # afresh per case: compiled providers recompile cleanly
                torch.manual_seed(0)
                student = torch.randn(n_rows, n_classes, device=device, dtype=dtype).requires_grad_(True)
                teacher = torch.randn(n_rows, n_classes, device=device, dtype=dtype)
                moved = 3 * student.numel() * student.element_size()
                timing = measure(loss_fn, (student, teacher), device, args.reps, moved, bandwidth)
                row = dict(kernel="softmax_kl", provider=provider, dtype=dtype_name, shape=f"{n_rows}x{n_classes}",
                           **timing, **env)  # fmt: skip
                record(args.out, row)
                count += 1
                del student, teacher
    finish(args.out, count, missing, "needs a CUDA device, and for liger the liger-kernel package")


if __name__ == "__main__":
    main()
