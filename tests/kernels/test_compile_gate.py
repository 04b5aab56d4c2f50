"""The compile gate: every kernel variant the launchers choose compiles for sm_90 and sm_80 without spills and
within the shared memory of a block (benchmarks/compile_gate.py, run in a process without the interpreter)."""

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import compile_gate

ROOT = Path(__file__).resolve().parents[2]
OPS = ("softmax_kl", "feature_match", "attention_transfer", "adapted_feature_match")


def _row(**changes):
    row = dict(op="softmax_kl", kernel="_softmax_kl_kernel", variant="BLOCK_V=1024", target="sm_90", registers=40,
               spill_bytes=0, stack_bytes=0, shared_bytes=16, tensor_cores="-", vector_bits="128", compile_s=0.5,
               cases="1: x", error="")  # fmt: skip
    return row | changes


def test_problems_are_compile_errors_spills_and_shared_memory_over_the_limit():
    assert compile_gate.problems([_row(), _row(target="sm_80", shared_bytes=163 * 1024)]) == []
    found = compile_gate.problems([
        _row(spill_bytes=1456, registers=255),
        _row(target="sm_80", shared_bytes=170_000),
        _row(error="CompilationError: out of resource", registers="", spill_bytes="", shared_bytes=""),
        _row(registers="", spill_bytes=""),
    ])  # fmt: skip
    assert len(found) == 4
    assert "1456 bytes of register spills (255 registers)" in found[0]
    assert "170000 bytes of shared memory, over the 166912 per block" in found[1]
    assert "does not compile: CompilationError" in found[2]
    assert "ptxas reported no resource usage" in found[3]


def test_global_access_widths_are_read_from_the_ptx():
    ptx = ("ld.global.v4.b32 {%r1, %r2, %r3, %r4}, [%rd1];\n ld.global.b16 %rs1, [%rd2];\n"
           " st.global.v2.f32 [%rd3], {%f1, %f2};")  # fmt: skip
    assert compile_gate._global_access_bits(ptx) == (16, 128)
    assert compile_gate._global_access_bits("add.f32 %f1, %f2, %f3;") == (0, 0)


def test_every_case_builds_on_its_op():
    names = [case.name for case in compile_gate.cases()]
    assert len(names) == len(set(names))
    assert {case.op for case in compile_gate.cases()} == set(OPS)


def test_every_kernel_variant_compiles_for_sm90_and_sm80_without_spills(tmp_path):
    pytest.importorskip("triton")
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    out = tmp_path / "report.csv"
    result = subprocess.run([sys.executable, "-m", "benchmarks.compile_gate", "--out", str(out)], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=900)  # fmt: skip
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    with out.open() as handle:
        rows = list(csv.DictReader(handle))
    assert {(row["op"], row["target"]) for row in rows} == {(op, f"sm_{t}") for op in OPS for t in (90, 80)}
    assert all(row["registers"] and int(row["spill_bytes"]) == 0 for row in rows)
    # softmax_kl streams its rows with 16-byte accesses at every V, 1000 included (row starts not 16-aligned),
    # also in row slices; the split-row loss kernel without gradients reads only per-row values (no rows).
    streaming = [row for row in rows if row["op"] == "softmax_kl" and not (
        row["kernel"] == "_split_loss_grad_kernel" and "STUDENT_GRAD=False" in row["variant"]
        and "TEACHER_GRAD=False" in row["variant"])]  # fmt: skip
    assert {int(row["vector_bits"].split("-")[-1]) for row in streaming} == {128}
    kernels = {row["kernel"] for row in rows if row["op"] == "softmax_kl"}
    assert {"_softmax_kl_kernel", "_split_stats_kernel", "_split_mixture_kernel", "_split_loss_grad_kernel"} <= kernels
