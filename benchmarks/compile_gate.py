"""The compile gate: every gankd Triton kernel variant compiled for sm_90 and sm_80 without a GPU, with the
registers, spills, shared memory, tensor-core instructions and global-access vector widths of each.

The real launchers choose the variants. The public ops run forward and backward on CPU tensors of the
CASES below (realistic shapes, dtypes, layouts, options) while every kernel launch is replaced by a compile
for the target: Triton's `warmup` under an offline driver that names the target (its compiler and the
ptxas inside the triton wheel need no GPU). So each variant is compiled with exactly the constexprs, block
sizes, num_warps, num_stages and argument specialisations (16-divisible strides and pointers) that a GPU
run of that case would launch.

    python -m benchmarks.compile_gate                          # both targets; writes COMPILE_REPORT
    python -m benchmarks.compile_gate --targets 90 --ops softmax_kl --out /tmp/report.csv

Exit status 1 when a variant fails to compile, spills registers, or needs more shared memory than one block
may have on the target (SHARED_LIMIT). Reports are cached under $GANKD_CACHE/compile_gate (default
~/.cache/gankd), keyed by the hash of the kernels' sources, this file and the Triton version, so an
unchanged tree reruns in seconds. Run it without TRITON_INTERPRET (the interpreter replaces the compiler).
Another Triton version (the GPU machine's) is checked the same way, its wheel in front on the path:
`pip install --no-deps --target DIR triton==X`, then `PYTHONPATH=DIR python -m benchmarks.compile_gate --out ...`.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import io
import itertools
import json
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
COMPILE_REPORT = ROOT / "benchmarks" / "results" / "compile_report.csv"
# Shared memory one block may use (the opt-in maximum): H100 (sm_90) and A100 (sm_80).
SHARED_LIMIT = {90: 227 * 1024, 80: 163 * 1024}
SM_COUNT = {90: 132, 80: 108}  # what the launchers would read from the device (H100 SXM, A100)
COLUMNS = ["op", "kernel", "variant", "target", "registers", "spill_bytes", "stack_bytes", "shared_bytes",
           "tensor_cores", "vector_bits", "compile_s", "cases", "error"]  # fmt: skip
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class Case:
    """One workload: `run()` calls a public op (and its backward) on CPU tensors."""

    op: str
    name: str
    run: Callable[[], None]


def _logits(rows: int, classes: int, dtype: torch.dtype, grad: bool) -> torch.Tensor:
    return torch.empty(rows, classes, dtype=dtype).requires_grad_(grad)


def _softmax_kl_case(rows, classes, dtype, direction, with_ce, grads) -> Callable[[], None]:
    def run():
        from gankd.kernels import softmax_kl

        student = _logits(rows, classes, dtype, "student" in grads)
        teacher = _logits(rows, classes, dtype, "teacher" in grads)
        labels = torch.zeros(rows, dtype=torch.long) if with_ce else None
        loss = softmax_kl(student, teacher, 2.0, direction=direction, labels=labels, ce_weight=0.5 if with_ce else 0.0,
                          impl="triton")  # fmt: skip
        if grads:
            (loss * 0.5).backward()  # an upstream gradient other than 1: the row-scaling kernel runs

    return run


def _maps(shape, dtype, channels_last, grad):
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    # Allocated in its layout: converting would copy (and touch) hundreds of MB per case for nothing.
    return torch.empty(shape, dtype=dtype, memory_format=memory_format).requires_grad_(grad)


def _backward(loss: torch.Tensor) -> None:
    """Backward with an upstream gradient other than 1: 0.5 for a scalar loss, a materialized map for a
    per-element one (reduction "none"), as (loss * 0.5).sum() gives; its values are never read (no kernel
    runs), so it is allocated, not computed: filling maps of 10^8 elements took most of the gate's time."""
    if loss.dim() == 0:
        (loss * 0.5).backward()
    else:
        loss.backward(torch.empty(loss.shape, dtype=loss.dtype))


def _feature_case(op, shape, dtype, channels_last, teacher_grad, teacher_shape=None, **options) -> Callable[[], None]:
    def run():
        from gankd import kernels

        student = _maps(shape, dtype, channels_last, True)
        teacher = _maps(teacher_shape or shape, dtype, channels_last, teacher_grad)
        loss = getattr(kernels, op)(student, teacher, impl="triton", **options)
        _backward(loss)

    return run


def _adapter_case(shape, teacher_channels, dtype, channels_last, allow_tf32) -> Callable[[], None]:
    def run():
        from gankd.kernels import adapted_feature_match

        student = _maps(shape, dtype, channels_last, True)
        teacher = _maps((shape[0], teacher_channels, *shape[2:]), dtype, channels_last, False)
        weight = torch.empty(teacher_channels, shape[1], 1, 1, dtype=dtype, requires_grad=True)
        bias = torch.empty(teacher_channels, dtype=dtype, requires_grad=True)
        previous = torch.backends.cudnn.allow_tf32
        torch.backends.cudnn.allow_tf32 = allow_tf32
        try:
            loss = adapted_feature_match(student, teacher, weight, bias, impl="triton")
            _backward(loss)
        finally:
            torch.backends.cudnn.allow_tf32 = previous

    return run


def _softmax_kl_cases() -> list[Case]:
    table = []
    for rows, classes in [(256, 1000), (64, 32768), (32, 131072), (32, 262144), (16, 262144)]:
        for (dtype_name, dtype), direction in itertools.product(DTYPES.items(), ("forward", "reverse", "jsd")):
            for with_ce, grads in itertools.product((False, True), ((), ("student",), ("student", "teacher"))):
                name = f"{rows}x{classes} {dtype_name} {direction}{' +ce' * with_ce} grad:{'+'.join(grads) or 'none'}"
                run = _softmax_kl_case(rows, classes, dtype, direction, with_ce, grads)
                table.append(Case("softmax_kl", name, run))
    return table


def _feature_cases() -> list[Case]:
    table = []
    for shape, dtype_name, channels_last, teacher_grad in itertools.product(
        [(16, 256, 64, 64), (32, 512, 64, 64)], ("fp32", "bf16"), (False, True), (False, True)
    ):
        dtype = DTYPES[dtype_name]
        tag = (f"{'x'.join(map(str, shape))} {dtype_name} {'channels_last' if channels_last else 'NCHW'}"
               f"{' +teacher grad' * teacher_grad}")  # fmt: skip
        for kind, reduction in itertools.product(("mse", "l1", "smooth_l1", "cosine"), ("mean", "none")):
            run = _feature_case("feature_match", shape, dtype, channels_last, teacher_grad, kind=kind,
                                reduction=reduction)  # fmt: skip
            table.append(Case("feature_match", f"{kind} {reduction} {tag}", run))
        student_shape = (shape[0], shape[1] // 2, *shape[2:])
        for p, reduction in itertools.product((2, 1, 3), ("mean", "none")):
            run = _feature_case("attention_transfer", student_shape, dtype, channels_last, teacher_grad,
                                teacher_shape=shape, p=p, reduction=reduction)  # fmt: skip
            table.append(Case("attention_transfer",
                              f"p={p} {reduction} {tag} (student {shape[1] // 2} channels)", run))  # fmt: skip
    return table


def _adapter_cases() -> list[Case]:
    from gankd.kernels._adapter_kernels import MAX_STUDENT_CHANNELS_FP32 as FP32_LIMIT
    from gankd.kernels._adapter_kernels import MAX_STUDENT_CHANNELS_IEEE as IEEE_LIMIT

    table = []
    # (student shape, teacher channels): GAN Compression's 128->512 and 512->512 maps, and the documented
    # limits (512 student channels with fp32 products, 1024 with fp16/bf16).
    shapes = [((16, 128, 64, 64), 512), ((16, 512, 32, 32), 512), ((8, 512, 32, 32), 1024),
              ((8, 1024, 16, 16), 512), ((8, 1024, 16, 16), 1024), ((16, 64, 64, 64), 256)]  # fmt: skip
    for (shape, teacher_channels), dtype_name, channels_last in itertools.product(
        shapes, ("fp32", "bf16", "fp16"), (False, True)
    ):
        for allow_tf32 in (True, False) if dtype_name == "fp32" else (True,):
            if dtype_name == "fp32" and shape[1] > (FP32_LIMIT if allow_tf32 else IEEE_LIMIT):
                continue  # over the documented limit of fp32 products: the op runs the reference
            name = (f"{'x'.join(map(str, shape))}->{teacher_channels} {dtype_name} "
                    f"{'channels_last' if channels_last else 'NCHW'}{' ieee' * (not allow_tf32)}")  # fmt: skip
            run = _adapter_case(shape, teacher_channels, DTYPES[dtype_name], channels_last, allow_tf32)
            table.append(Case("adapted_feature_match", name, run))
    return table


def cases() -> list[Case]:
    """The workloads of the gate: the shapes, dtypes, layouts and options users run the kernels at."""
    return _softmax_kl_cases() + _feature_cases() + _adapter_cases()


# ---------------------------------------------------------------------------------------------------- worker


def _offline_driver(capability: int):
    from triton.backends.compiler import GPUTarget
    from triton.backends.driver import DriverBase

    class OfflineDriver(DriverBase):
        """Names the target and device 0 to Triton's JIT; launches nothing (the gate only compiles)."""

        target = GPUTarget("cuda", capability, 32)

        @classmethod
        def is_active(cls):
            return False

        def map_python_to_cpp_type(self, ty):
            return ty

        def get_current_target(self):
            return self.target

        def get_active_torch_device(self):
            return torch.device("cpu")

        def get_benchmarker(self):
            raise RuntimeError("the compile gate's offline driver cannot benchmark")

        def get_current_device(self):
            return 0

        def get_current_stream(self, device=None):
            return 0

    return OfflineDriver()


_PTXAS = re.compile(r"Used (\d+) registers")
_SPILLS = re.compile(r"(\d+) bytes spill stores, (\d+) bytes spill loads")
_STACK = re.compile(r"(\d+) bytes stack frame")
_VECTOR = re.compile(r"(?:ld|st)\.global(?:\.[a-z0-9]+)*?\.v(\d)\.(?:b|f|u|s)(\d+)")
_SCALAR = re.compile(r"(?:ld|st)\.global(?:\.[a-z0-9]+)*?\.(?:b|f|u|s)(\d+)\s")


def _global_access_bits(ptx: str) -> tuple[int, int]:
    """(narrowest, widest) global load/store width in bits in the PTX."""
    widths = [int(count) * int(bits) for count, bits in _VECTOR.findall(ptx)]
    widths += [int(bits) for bits in _SCALAR.findall(ptx)]
    return (min(widths), max(widths)) if widths else (0, 0)


# ptxas -v's report of each kernel this process compiled (by compile hash): a kernel launched again, by another
# op, comes from Triton's in-memory cache without one.
_PTXAS_LOGS: dict[str, str] = {}


class _CompilingKernel:
    """Stands in for a launched @triton.jit kernel: `kernel[grid](*args, **kwargs)` compiles instead."""

    def __init__(self, op: str, kernel, reports: dict, current_case: list[str]):
        self.op, self.kernel, self.reports, self.current_case = op, kernel, reports, current_case

    def __getitem__(self, grid):
        def compile_variant(*args, **kwargs):
            log = io.StringIO()
            started = time.perf_counter()
            error = ""
            compiled = None
            try:
                with contextlib.redirect_stdout(log):
                    compiled = self.kernel.warmup(*args, grid=grid, **kwargs)
            except Exception as caught:  # a compile error is a finding of the gate, reported per variant
                error = f"{type(caught).__name__}: {str(caught).splitlines()[0] if str(caught) else ''}"
            log_text = ""
            if compiled is not None:  # a kernel this process compiled before comes from Triton's memory, silently
                log_text = _PTXAS_LOGS.setdefault(compiled.hash, log.getvalue())
            constexprs = {key: value for key, value in kwargs.items() if key not in ("num_warps", "num_stages")}
            variant = ", ".join(f"{key}={value}" for key, value in sorted(constexprs.items()))
            dtypes = sorted({str(arg.dtype).removeprefix("torch.") for arg in args if isinstance(arg, torch.Tensor)})
            key = compiled.hash if compiled is not None else f"error {variant}"
            if key not in self.reports:
                name = getattr(self.kernel, "__name__", None) or self.kernel.fn.__name__
                self.reports[key] = _report(self.op, name, compiled, log_text, error,
                                            time.perf_counter() - started, variant, dtypes, kwargs)  # fmt: skip
            self.reports[key]["cases"].add(self.current_case[0])

        return compile_variant


def _report(op, name, compiled, log, error, seconds, variant, dtypes, kwargs) -> dict:
    row = {"op": op, "kernel": name, "error": error, "compile_s": round(seconds, 2), "cases": set()}
    num_warps = compiled.metadata.num_warps if compiled is not None else kwargs.get("num_warps", 4)
    num_stages = compiled.metadata.num_stages if compiled is not None else kwargs.get("num_stages", "")
    row["variant"] = f"{variant}, dtypes={'/'.join(dtypes)}, num_warps={num_warps}, num_stages={num_stages}"
    if compiled is None:
        return row | dict(registers="", spill_bytes="", stack_bytes="", shared_bytes="", tensor_cores="",
                          vector_bits="")  # fmt: skip
    ptx = compiled.asm["ptx"]
    registers = _PTXAS.search(log)
    spills = _SPILLS.search(log)
    stack = _STACK.search(log)
    narrow, wide = _global_access_bits(ptx)
    # Which tensor-core instructions appear: "wgmma", "mma" (mma.sync), both ("wgmma+mma": some products
    # stay on mma.sync) or none ("-").
    found = [kind for kind, present in (("wgmma", "wgmma" in ptx), ("mma", re.search(r"\bmma\.sync", ptx))) if present]
    tensor_cores = "+".join(found) or "-"
    return row | dict(
        registers=int(registers.group(1)) if registers else "",
        spill_bytes=(int(spills.group(1)) + int(spills.group(2))) if spills else "",
        stack_bytes=int(stack.group(1)) if stack else "",
        shared_bytes=compiled.metadata.shared,
        tensor_cores=tensor_cores,
        vector_bits=f"{narrow}-{wide}" if narrow != wide else str(wide),
    )


def compile_target(capability: int, ops: tuple[str, ...], match: str = "") -> list[dict]:
    """Compile every variant the cases of `ops` (those whose name contains `match`) launch for sm_<capability>;
    one report row per variant."""
    if os.environ.get("TRITON_INTERPRET") == "1":
        raise SystemExit("the compile gate compiles kernels: run it without TRITON_INTERPRET=1")
    import importlib

    from triton import knobs
    from triton.runtime.driver import driver

    driver.set_active(_offline_driver(capability))
    knobs.nvidia.dump_ptxas_log = True  # ptxas -v's resource usage, printed by Triton; captured per compile
    dispatch = importlib.import_module("gankd.kernels._dispatch")
    dispatch.triton_unavailable_reason = lambda device: None  # CPU tensors take the Triton path (compile only)
    adapter = importlib.import_module("gankd.kernels._adapter_kernels")
    adapter._weight_programs = lambda device: 2 * SM_COUNT[capability]
    adapter._capability_major = lambda device: capability // 10  # tiles chosen as on that GPU
    softmax = importlib.import_module("gankd.kernels.softmax_kl")
    softmax._sm_count = lambda device: SM_COUNT[capability]  # rows split as on that GPU
    reports: dict = {}
    current_case = [""]
    modules = {"softmax_kl": ["softmax_kl"], "feature_match": ["feature_match", "_features"],
               "attention_transfer": ["attention_transfer", "_features"],
               "adapted_feature_match": ["_adapter_kernels", "_features"]}  # fmt: skip
    launched = {}
    for op in ops:
        for module_name in modules[op]:
            module = importlib.import_module(f"gankd.kernels.{module_name}")
            for attribute, value in vars(module).items():
                if attribute.endswith("_kernel") and hasattr(value, "warmup"):
                    launched[(module, attribute)] = value
    # A fresh Triton cache: a kernel found in the cache would skip ptxas, and with it the resource report.
    with tempfile.TemporaryDirectory(prefix="gankd-compile-gate-") as cache_dir:
        knobs.cache.dir = cache_dir
        for case in cases():
            if case.op not in ops or match not in case.name:
                continue
            current_case[0] = case.name
            for (module, attribute), kernel in launched.items():
                setattr(module, attribute, _CompilingKernel(case.op, kernel, reports, current_case))
            try:
                case.run()
            finally:
                for (module, attribute), kernel in launched.items():
                    setattr(module, attribute, kernel)
    rows = []
    for row in reports.values():
        names = sorted(row.pop("cases"))
        rows.append(row | {"target": f"sm_{capability}", "cases": f"{len(names)}: {names[0]}"})
    return rows


# ------------------------------------------------------------------------------------------------- the gate


def problems(rows: list[dict]) -> list[str]:
    """What fails the gate: compile errors, register spills, shared memory over the target's limit."""
    found = []
    for row in rows:
        where = f"{row['kernel']} [{row['variant']}] on {row['target']}"
        limit = SHARED_LIMIT[int(row["target"].removeprefix("sm_"))]
        if row["error"]:
            found.append(f"{where}: does not compile: {row['error']}")
        elif row["spill_bytes"] == "" or row["registers"] == "":
            found.append(f"{where}: ptxas reported no resource usage")
        else:
            if int(row["spill_bytes"]):
                found.append(f"{where}: {row['spill_bytes']} bytes of register spills ({row['registers']} registers)")
            if int(row["shared_bytes"]) > limit:
                found.append(f"{where}: {row['shared_bytes']} bytes of shared memory, over the {limit} per block")
    return found


def _cache_key(capability: int, ops: tuple[str, ...], match: str) -> str:
    import triton

    digest = hashlib.sha256()
    for path in sorted((ROOT / "kernels").glob("*.py")) + [Path(__file__)]:
        digest.update(path.read_bytes())
    digest.update(f"{triton.__version__} sm_{capability} {','.join(ops)} {match}".encode())
    return digest.hexdigest()[:24]


def _cache_dir() -> Path:
    return Path(os.environ.get("GANKD_CACHE", Path.home() / ".cache" / "gankd")) / "compile_gate"


def _target_rows(capability: int, ops: tuple[str, ...], match: str) -> list[dict]:
    cached = _cache_dir() / f"{_cache_key(capability, ops, match)}.json"
    if cached.is_file():
        return json.loads(cached.read_text())
    rows = compile_target(capability, ops, match)
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_text(json.dumps(rows))
    return rows


def run_gate(targets: tuple[int, ...], ops: tuple[str, ...], jobs: int, match: str = "") -> list[dict]:
    """Report rows of every variant for every target; (target, op) pairs compile in `jobs` processes."""
    work = [(capability, (op,), match) for capability in targets for op in ops]
    # One fresh spawned process per (target, op): Triton's JIT keeps the target of its first compile.
    with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn"), max_tasks_per_child=1) as pool:
        results = list(pool.map(_target_rows, *zip(*work, strict=True)))
    return [row for rows in results for row in rows]


def write_report(rows: list[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ordered = sorted(rows, key=lambda row: (row["op"], row["kernel"], row["target"], row["variant"]))
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(ordered)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", nargs="+", type=int, default=sorted(SHARED_LIMIT), choices=sorted(SHARED_LIMIT))
    ops = ("softmax_kl", "feature_match", "attention_transfer", "adapted_feature_match")
    parser.add_argument("--ops", nargs="+", default=list(ops), choices=ops)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="compiling processes")
    parser.add_argument("--match", default="", help="only the cases whose name contains this (e.g. 'ieee')")
    parser.add_argument("--out", type=Path, default=COMPILE_REPORT)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    rows = run_gate(tuple(args.targets), tuple(args.ops), args.jobs, args.match)
    write_report(rows, args.out)
    found = problems(rows)
    print(f"{len(rows)} kernel variants compiled for {', '.join(f'sm_{t}' for t in args.targets)} in "
          f"{time.perf_counter() - started:.0f} s; report: {args.out}")  # fmt: skip
    for line in found:
        print(f"FAIL {line}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
