"""Launch-configuration sweep for feature_match on a GPU: block size and warps of its elementwise kernel (mse) and of
its cosine kernel, each checked against feature_match_ref, then timed.

For each dtype it times one forward+backward (student gradient) of feature_match at --shape under each
configuration, overriding the launcher's module constants (kernels/feature_match.py: ELEMENTWISE_BLOCK and
ELEMENTWISE_WARPS for mse, COSINE_BLOCK_P and COSINE_WARPS for cosine). The first GPU run measured fp32 mse at
0.72 ms against a 0.27 ms byte floor (benchmarks/NOTES.md): this says whether the launch is why. Rows go to
--out (CSV); the table is printed last.

    python -m benchmarks.tune_feature_match --out /tmp/tune_feature_match.csv
    python -m benchmarks.tune_feature_match --dtypes fp32 --configs mse:4096:4,mse:1024:4
"""

import argparse
import importlib
from pathlib import Path

import torch

from benchmarks.bench_common import (
    DTYPES,
    ENVIRONMENT_COLUMNS,
    copy_bandwidth_gbps,
    cuda_device_or_exit,
    failed_measurement,
    loss_and_grad,
    parse_shapes,
    relative_error,
    time_step,
    write_rows,
)
from gankd.kernels import feature_match, feature_match_ref

feature_match_module = importlib.import_module("gankd.kernels.feature_match")  # the module, not the function

DEFAULT_SHAPE = "32x512x64x64"
# kind:block:warps, block being ELEMENTWISE_BLOCK (mse) or COSINE_BLOCK_P (cosine); the first of each kind is
# the launcher's own choice.
DEFAULT_CONFIGS = "mse:4096:4,mse:4096:8,mse:2048:4,mse:1024:4,cosine:128:4,cosine:64:4,cosine:128:8,cosine:256:8"
KNOBS = {"mse": ("ELEMENTWISE_BLOCK", "ELEMENTWISE_WARPS"), "cosine": ("COSINE_BLOCK_P", "COSINE_WARPS")}
COLUMNS = ["shape", "dtype", "kind", "block", "warps", "ms", "bw_fraction", "error", "ok", *ENVIRONMENT_COLUMNS]
TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 1.6e-2, torch.float16: 2e-3}


def parse_config(item: str) -> tuple[str, int, int]:
    """'kind:block:warps' -> (kind, block, warps); SystemExit with the usage otherwise."""
    parts = item.split(":")
    if len(parts) != 3 or parts[0] not in KNOBS or not all(part.isdigit() and int(part) > 0 for part in parts[1:]):
        raise SystemExit(f"--configs: each item must be {'|'.join(KNOBS)}:block:warps, got {item!r}")
    return parts[0], int(parts[1]), int(parts[2])


def configure(kind: str, block: int, warps: int) -> None:
    block_name, warps_name = KNOBS[kind]
    setattr(feature_match_module, block_name, block)
    setattr(feature_match_module, warps_name, warps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default=DEFAULT_SHAPE, help="N x C x H x W of both maps")
    parser.add_argument("--dtypes", default="fp32,bf16")
    parser.add_argument("--configs", default=DEFAULT_CONFIGS, help="kind:block:warps list")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    device = cuda_device_or_exit("tune_feature_match", "times compiled kernels")
    (shape,) = parse_shapes(args.shape)
    configs = [parse_config(item) for item in args.configs.split(",")]
    bandwidth = copy_bandwidth_gbps(device)
    print(f"{torch.cuda.get_device_name(device)}: copy bandwidth {bandwidth:.0f} GB/s")
    defaults = {name: getattr(feature_match_module, name) for names in KNOBS.values() for name in names}
    rows = []
    for dtype_name in args.dtypes.split(","):
        dtype = DTYPES[dtype_name]
        student = torch.randn(shape, device=device, dtype=dtype)
        teacher = torch.randn(shape, device=device, dtype=dtype)
        moved = 3 * student.numel() * student.element_size()  # read both maps, write the student's gradient
        for kind, block, warps in configs:
            configure(kind, block, warps)
            row = dict(shape=args.shape, dtype=dtype_name, kind=kind, block=block, warps=warps)
            fused = lambda s, t, kind=kind: feature_match(s, t, kind=kind, impl="triton")  # noqa: E731
            try:
                expected = loss_and_grad(lambda s, t, kind=kind: feature_match_ref(s, t, kind=kind), student, teacher)
                got = loss_and_grad(fused, student, teacher)
                error = max(relative_error(got[0], expected[0]), relative_error(got[1], expected[1]))
                leaf = student.detach().clone().requires_grad_(True)

                def step(leaf=leaf, fused=fused, teacher=teacher):
                    leaf.grad = None
                    fused(leaf, teacher).backward()

                ms = time_step(step, device, 100)
                row |= dict(ms=ms, bw_fraction=moved / ms / 1e6 / bandwidth, error=error, ok=error <= TOLERANCE[dtype])
            except Exception as failure:  # a configuration that does not build or run: say so, go on
                row |= failed_measurement(failure)
            rows.append(row)
            print(row, flush=True)
            for name, value in defaults.items():
                setattr(feature_match_module, name, value)
        del student, teacher
    write_rows(args.out, rows, COLUMNS, device)
    print(f"{'dtype':>5} {'kind':>6} {'block':>6} {'warps':>5} {'ms':>9} {'%copy':>6} {'error':>9}  ok")
    for row in rows:
        print(f"{row['dtype']:>5} {row['kind']:>6} {row['block']:>6} {row['warps']:>5} {row['ms']:9.4f} "
              f"{100 * row['bw_fraction']:6.1f} {row['error']:9.2e}  {row['ok']}")  # fmt: skip


if __name__ == "__main__":
    main()
