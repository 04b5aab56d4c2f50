"""Shared pieces of the bench_<op>.py scripts: environment stamp, copy bandwidth, CSV rows."""

import argparse
import csv
import math
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import torch

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# The columns that say where and with what a row was measured (environment() fills them).
ENVIRONMENT_COLUMNS = ["device", "torch", "triton", "commit"]
KERNEL_COLUMNS = ["kernel", "provider", "dtype", "shape", "ms", "gbps", "bw_fraction", "peak_extra_mb",
                  *ENVIRONMENT_COLUMNS]  # fmt: skip


def parse_shapes(text: str) -> list[tuple[int, ...]]:
    """'256x1000,4096x32768' -> [(256, 1000), (4096, 32768)]."""
    try:
        return [tuple(int(size) for size in item.split("x")) for item in text.split(",") if item]
    except ValueError:
        raise SystemExit(f"--shapes must look like 256x1000,4096x32768, got {text!r}") from None


def add_common_arguments(parser: argparse.ArgumentParser, *, shapes_help: str, providers: tuple[str, ...]) -> None:
    """The options every bench_<op>.py takes: --shapes --dtypes --providers --device --reps --out."""
    parser.add_argument("--shapes", default=None, help=shapes_help)
    parser.add_argument("--dtypes", default="bf16,fp32", help="from fp32, bf16, fp16")
    parser.add_argument("--providers", default=",".join(providers), help=f"from {', '.join(providers)}")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--reps", type=int, default=5, help="timed repetitions on CPU (CUDA uses do_bench)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "kernels.csv")


def cuda_device_or_exit(tool: str, why: str) -> torch.device:
    """The CUDA device, or SystemExit naming the tool and why it needs one (the GPU-only tuning tools)."""
    if not torch.cuda.is_available():
        raise SystemExit(f"{tool} needs a CUDA device: it {why}")
    return torch.device("cuda")


def compiled(fn: Callable) -> Callable:
    """torch.compile of fn with Dynamo's caches cleared first, so each measured case compiles afresh and
    earlier cases cannot exhaust the recompile limit (which silently falls back to eager)."""
    torch._dynamo.reset()
    return torch.compile(fn)


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """max |actual - expected| / max |expected|, in float64."""
    actual, expected = actual.double(), expected.double()
    return ((actual - expected).abs().max() / expected.abs().max().clamp(min=1e-12)).item()


def loss_and_grad(fn: Callable, student: torch.Tensor, teacher: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, student gradient) of fn(student, teacher) on a fresh leaf copy of student (the tuning tools' check)."""
    leaf = student.detach().clone().requires_grad_(True)
    loss = fn(leaf, teacher)
    loss.backward()
    return loss.detach(), leaf.grad


def time_step(step: Callable[[], None], device: torch.device, reps: int) -> float:
    """Median milliseconds of one call of `step` (a forward+backward): do_bench on CUDA, wall clock on CPU."""
    if device.type == "cuda":
        import triton.testing

        return triton.testing.do_bench(step, warmup=25, rep=max(reps, 100), return_mode="median")
    step()  # warm-up (and compilation)
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        step()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def peak_extra_mb(step: Callable[[], None], device: torch.device) -> float:
    """Peak device memory above what is allocated before one call of `step` (CUDA only, else NaN), in MB."""
    if device.type != "cuda":
        return float("nan")
    torch.cuda.synchronize()
    baseline = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    step()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - baseline) / 1e6


def shapes_for_device(text: str | None, default: str, device: torch.device, elements: Callable, limit: int) -> list:
    """--shapes, else the default shapes; on a CPU the defaults over `limit` elements are skipped (and said)."""
    shapes = parse_shapes(text or default)
    if text is None and device.type != "cuda":
        skipped = [shape for shape in shapes if elements(shape) > limit]
        shapes = [shape for shape in shapes if elements(shape) <= limit]
        print(f"CPU run: skipping shapes {skipped} (pass --shapes to force them)")
    return shapes


def measure(loss_fn: Callable, inputs: tuple[torch.Tensor | None, ...], device: torch.device, reps: int,
            bytes_moved: int, bandwidth: float) -> dict:  # fmt: skip
    """The timing columns of a row for one forward+backward of loss_fn(*inputs), the gradients of the inputs
    that require them cleared before each: ms, GB/s from the minimum bytes, fraction of copy bandwidth, peak
    memory."""
    leaves = [tensor for tensor in inputs if tensor is not None and tensor.requires_grad]

    def step():
        for leaf in leaves:
            leaf.grad = None
        loss_fn(*inputs).backward()

    ms = time_step(step, device, reps)
    gbps = bytes_moved / ms / 1e6
    return dict(ms=ms, gbps=gbps, bw_fraction=gbps / bandwidth, peak_extra_mb=peak_extra_mb(step, device))


def print_row(row: dict) -> None:
    peak = "n/a" if math.isnan(row["peak_extra_mb"]) else f"{row['peak_extra_mb']:.1f} MB"
    print(f"{row['kernel']:>22} {row['provider']:>14} {row['dtype']} {row['shape']:>17}: {row['ms']:9.3f} ms "
          f"{row['gbps']:8.1f} GB/s "
          f"({100 * row['bw_fraction']:.0f}% of copy), peak extra memory {peak}")  # fmt: skip


def record(out: Path, row: dict) -> None:
    """Print a row and append it at once, so a run stopped at its time limit keeps every row it measured."""
    print_row(row)
    append_rows(out, [row])


def finish(out: Path, count: int, missing: list[str], why: str) -> None:
    """Say how many rows were appended, and which providers could not be measured here, and why."""
    print(f"appended {count} rows to {out}")
    if missing:
        print(f"not measured here: {', '.join(missing)} ({why})")


def git_commit() -> str:
    """The checkout's commit (-dirty with uncommitted changes), or GANKD_COMMIT where set: a GPU machine's copy of
    the tree can carry a .git of another commit than the files it holds."""
    if os.environ.get("GANKD_COMMIT"):
        return os.environ["GANKD_COMMIT"]
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True,
                             cwd=Path(__file__).parent)  # fmt: skip
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, cwd=Path(__file__).parent).stdout.strip()  # fmt: skip
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def environment(device: torch.device) -> dict[str, str]:
    """The columns that say where and with what a row was measured."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = "none"
    return dict(device=name, torch=torch.__version__, triton=triton_version, commit=git_commit())


def copy_bandwidth_gbps(device: torch.device, megabytes: int | None = None) -> float:
    """Measured device-to-device copy bandwidth in GB/s, counting bytes read plus bytes written."""
    megabytes = megabytes or (1024 if device.type == "cuda" else 256)
    source = torch.empty(megabytes * 2**20 // 4, dtype=torch.float32, device=device).fill_(1.0)
    target = torch.empty_like(source)
    moved = 2 * source.numel() * source.element_size()
    if device.type == "cuda":
        import triton.testing

        ms = triton.testing.do_bench(lambda: target.copy_(source), warmup=25, rep=200, return_mode="median")
    else:
        target.copy_(source)
        times = []
        for _ in range(5):
            start = time.perf_counter()
            target.copy_(source)
            times.append(time.perf_counter() - start)
        ms = sorted(times)[len(times) // 2] * 1e3
    return moved / ms / 1e6


def failed_measurement(failure: Exception) -> dict:
    """A tuning row's measured fields for a configuration that did not build or run: NaNs and why, in `ok`."""
    return dict(ms=float("nan"), bw_fraction=float("nan"), error=float("nan"),
                ok=f"{type(failure).__name__}: {str(failure).splitlines()[0][:80]}")  # fmt: skip


def write_rows(path: Path, rows: list[dict], columns: list[str], device: torch.device) -> None:
    """A tuning tool's CSV: `rows` stamped with the environment of `device`, under the header `columns`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    stamp = environment(device)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(row | stamp for row in rows)


def append_rows(path: Path, rows: list[dict], columns: list[str] = KERNEL_COLUMNS) -> None:
    """Append rows to a long-format CSV, writing the header when the file is new."""
    path.parent.mkdir(parents=True, exist_ok=True)
    new_file = not path.exists() or path.stat().st_size == 0
    with path.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        if new_file:
            writer.writeheader()
        for row in rows:
            writer.writerow({key: _format(row[key]) for key in columns})


def _format(value):
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    return value
