"""benchmarks/bench_adapted_feature_match.py runs end to end on tiny shapes and writes well-formed rows."""

import csv
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).parent.parent


def test_bench_adapted_feature_match_appends_rows(tmp_path):
    out = tmp_path / "kernels.csv"
    command = [sys.executable, "-m", "benchmarks.bench_adapted_feature_match", "--shapes", "2x3x5x4x4,1x8x16x6x5",
               "--dtypes", "fp32,bf16", "--providers", "eager,gankd_triton", "--reps", "2",
               "--out", str(out)]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    with out.open() as handle:
        rows = list(csv.DictReader(handle))
    providers = ["eager", "gankd_triton"] if torch.cuda.is_available() else ["eager"]
    expected = [(p, d, s) for p in providers for d in ("fp32", "bf16") for s in ("2x3x5x4x4", "1x8x16x6x5")]
    assert [(row["provider"], row["dtype"], row["shape"]) for row in rows] == expected
    # Minimum bytes of the fp32 2x3x5x4x4 row: (2 * 96 + 160) * 4 map bytes + 2 * (15 + 5) * 4 adapter bytes.
    first = rows[0]
    assert float(first["gbps"]) * float(first["ms"]) * 1e6 == pytest.approx((2 * 96 + 160) * 4 + 2 * 20 * 4, rel=1e-4)
    for row in rows:
        assert row["kernel"] == "adapted_feature_match"
        assert float(row["ms"]) > 0 and float(row["gbps"]) > 0 and float(row["bw_fraction"]) > 0
        assert row["torch"] and row["device"] and row["commit"]
    if not torch.cuda.is_available():
        assert "not measured here: gankd_triton" in result.stdout
