"""Tuning sweep for softmax_kl on a GPU: launch configurations, each checked against the reference, then timed.

For each shape and dtype it times forward+backward under each (BLOCK_V, num_warps, programs per SM, pass order)
configuration, overriding the launcher's choice (kernels/softmax_kl.py: _launch_config, PROGRAMS_PER_SM,
ALTERNATE_PASSES: "a" streams each pass after a row's first the other way, "o" every pass in order),
after checking loss and gradient against softmax_kl_ref on fresh random inputs. It also profiles the host
side of the smallest shape (where the launch path, not the GPU, sets the time) and times that shape's
forward+backward replayed from a CUDA graph. Rows go to --out (CSV); the table is printed last.

    python -m benchmarks.tune_softmax_kl --out /tmp/tune.csv
    python -m benchmarks.tune_softmax_kl --shapes 8192x131072 --configs 4096:8:2:a,4096:8:2:o
"""

import argparse
import cProfile
import importlib
import io
import pstats
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
from gankd.kernels import softmax_kl, softmax_kl_ref

softmax_kl_module = importlib.import_module("gankd.kernels.softmax_kl")  # the module: the package's name is the op

DEFAULT_SHAPES = "4096x32768,8192x131072,16x262144,256x1000"
# BLOCK_V:num_warps:programs per SM:pass order; the first is the launcher's own choice for V >= 4096. (16 warps
# and 8 programs per SM were slower or no faster at 8192 x 131072 in the first GPU run: benchmarks/NOTES.md.)
DEFAULT_CONFIGS = "4096:8:2:a,4096:8:2:o,2048:8:2:a,8192:8:2:a,4096:8:4:a"
ORDERS = {"a": True, "o": False}  # ALTERNATE_PASSES
TEMPERATURE = 2.0
COLUMNS = [
    "shape",
    "dtype",
    "block",
    "warps",
    "per_sm",
    "order",
    "ms",
    "bw_fraction",
    "error",
    "ok",
    *ENVIRONMENT_COLUMNS,
]
TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 1.6e-2}


def configure(block: int, warps: int, per_sm: int, order: str) -> None:
    softmax_kl_module._launch_config = lambda n_cols: (min(block, 1 << (n_cols - 1).bit_length()), warps)
    softmax_kl_module.PROGRAMS_PER_SM = per_sm
    softmax_kl_module.ALTERNATE_PASSES = ORDERS[order]


def parse_config(item: str) -> tuple[int, int, int, str]:
    """'BLOCK_V:warps:per_sm[:order]' -> (block, warps, per_sm, order); the order defaults to "a"."""
    parts = item.split(":")
    numbers_ok = len(parts) >= 3 and all(part.isdigit() and int(part) > 0 for part in parts[:3])
    if not numbers_ok or len(parts) not in (3, 4) or (len(parts) == 4 and parts[3] not in ORDERS):
        raise SystemExit(f"--configs: each item must be BLOCK_V:warps:per_sm[:a|o], got {item!r}")
    return int(parts[0]), int(parts[1]), int(parts[2]), parts[3] if len(parts) == 4 else "a"


def host_profile(student: torch.Tensor, teacher: torch.Tensor, calls: int = 200) -> str:
    """The top of a cProfile of `calls` forward+backward calls: where the host time of a small call goes."""
    step = lambda: loss_and_grad(lambda s, t: softmax_kl(s, t, TEMPERATURE, impl="triton"), student, teacher)  # noqa: E731
    step()
    torch.cuda.synchronize()
    profile = cProfile.Profile()
    profile.enable()
    for _ in range(calls):
        step()
    torch.cuda.synchronize()
    profile.disable()
    text = io.StringIO()
    pstats.Stats(profile, stream=text).sort_stats("cumulative").print_stats(25)
    return text.getvalue()


def graph_replay_ms(student: torch.Tensor, teacher: torch.Tensor) -> float:
    """Median ms of one forward+backward replayed from a CUDA graph (the launch overhead removed)."""
    leaf = student.detach().clone().requires_grad_(True)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            leaf.grad = None
            softmax_kl(leaf, teacher, TEMPERATURE, impl="triton").backward()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    leaf.grad = None
    with torch.cuda.graph(graph):
        softmax_kl(leaf, teacher, TEMPERATURE, impl="triton").backward()
    return time_step(graph.replay, student.device, 100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", default=DEFAULT_SHAPES)
    parser.add_argument("--dtypes", default="bf16")
    parser.add_argument("--configs", default=DEFAULT_CONFIGS, help="BLOCK_V:num_warps:programs_per_SM[:a|o] list")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    device = cuda_device_or_exit("tune_softmax_kl", "times compiled kernels")
    configs = [parse_config(item) for item in args.configs.split(",")]
    bandwidth = copy_bandwidth_gbps(device)
    print(f"{torch.cuda.get_device_name(device)}: copy bandwidth {bandwidth:.0f} GB/s")
    default_config = (softmax_kl_module._launch_config, softmax_kl_module.PROGRAMS_PER_SM,
                      softmax_kl_module.ALTERNATE_PASSES)  # fmt: skip
    rows = []
    for dtype_name in args.dtypes.split(","):
        dtype = DTYPES[dtype_name]
        for n_rows, n_cols in parse_shapes(args.shapes):
            student = torch.randn(n_rows, n_cols, device=device, dtype=dtype) * 3
            teacher = torch.randn(n_rows, n_cols, device=device, dtype=dtype) * 3
            expected = loss_and_grad(lambda s, t: softmax_kl_ref(s, t, TEMPERATURE), student, teacher)
            moved = 3 * student.numel() * student.element_size()
            for block, warps, per_sm, order in configs:
                configure(block, warps, per_sm, order)
                row = dict(shape=f"{n_rows}x{n_cols}", dtype=dtype_name, block=block, warps=warps, per_sm=per_sm,
                           order=order)  # fmt: skip
                try:
                    got = loss_and_grad(lambda s, t: softmax_kl(s, t, TEMPERATURE, impl="triton"), student, teacher)
                    error = max(relative_error(got[0], expected[0]), relative_error(got[1], expected[1]))
                    leaf = student.detach().clone().requires_grad_(True)

                    def step(leaf=leaf, teacher=teacher):
                        leaf.grad = None
                        softmax_kl(leaf, teacher, TEMPERATURE, impl="triton").backward()

                    ms = time_step(step, device, 100)
                    row |= dict(ms=ms, bw_fraction=moved / ms / 1e6 / bandwidth, error=error,
                                ok=error <= TOLERANCE[dtype])  # fmt: skip
                except Exception as failure:  # a configuration that does not build or run: say so, go on
                    row |= failed_measurement(failure)
                rows.append(row)
                print(row, flush=True)
            (
                softmax_kl_module._launch_config,
                softmax_kl_module.PROGRAMS_PER_SM,
                softmax_kl_module.ALTERNATE_PASSES,
            ) = default_config
            if n_rows * n_cols <= 1 << 20:
                print(f"CUDA-graph replay {n_rows}x{n_cols} {dtype_name}: {graph_replay_ms(student, teacher):.4f} ms")
                print(host_profile(student, teacher))
            del student, teacher, expected
    write_rows(args.out, rows, COLUMNS, device)
    print(f"{'shape':>12} {'dtype':>5} {'block':>6} {'warps':>5} {'per_sm':>6} {'order':>5} {'ms':>9} {'%copy':>6} "
          f"{'error':>9}  ok")  # fmt: skip
    for row in rows:
        print(f"{row['shape']:>12} {row['dtype']:>5} {row['block']:>6} {row['warps']:>5} {row['per_sm']:>6} "
              f"{row['order']:>5} {row['ms']:9.4f} {100 * row['bw_fraction']:6.1f} {row['error']:9.2e}  "
              f"{row['ok']}")  # fmt: skip


if __name__ == "__main__":
    main()
