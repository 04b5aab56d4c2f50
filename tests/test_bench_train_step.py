"""benchmarks/bench_train_step.py: rows from a real run, and loss timing on exactly the Distiller's terms."""

import csv
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import bench_train_step  # noqa: E402


def test_bench_train_step_appends_a_row_per_workload(tmp_path):
    out = tmp_path / "train_step.csv"
    command = [sys.executable, str(BENCHMARKS / "bench_train_step.py"), "--batch", "2", "--reps", "1",
               "--device", "cpu", "--out", str(out)]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "not measured here: fused" in result.stdout
    with out.open() as handle:
        rows = list(csv.DictReader(handle))
    assert [(row["workload"], row["provider"], row["precision"]) for row in rows] == [
        (workload, "reference", "fp32") for workload in ("digits_gan", "photos_sr", "digits_cls")
    ]
    for row in rows:
        assert row["batch"] == "2" and row["device"].startswith("cpu") and row["commit"]
        step_ms, loss_ms = float(row["step_ms"]), float(row["loss_ms"])
        assert step_ms > 0 and loss_ms > 0
        assert float(row["images_per_s"]) == pytest.approx(2 / step_ms * 1e3, rel=1e-3)
        assert float(row["loss_share"]) == pytest.approx(loss_ms / step_ms, abs=1e-3)


@pytest.mark.parametrize(
    "workload, overrides",
    [
        ("digits_gan", ["distill.weights={output: 1.0, adapted: 1.0, attention: 100.0}"]),
        ("photos_sr", ["distill.weights={ground_truth: 1.0, output: 1.0, adapted: 0.5}",
                       "distill.feature_pairs={blocks.1: blocks.1, blocks.5: blocks.5}"]),
        ("digits_cls", ["distill.weights={kd: 0.9, ce: 0.1}"]),
    ],
)  # fmt: skip
def test_timed_loss_terms_are_the_distillers_terms(workload, overrides):
    # The loss-only timing must run what a training step runs: same terms, weights and tensors.
    config = bench_train_step.workload_config(workload, "reference", "fp32", 3, "cpu", overrides)
    stepper = bench_train_step.build_stepper(
        config, bench_train_step.Distributed(), bench_train_step.random_teacher_state(config)
    )
    stepper.distiller.eval()  # batch norm from running statistics: both forwards see the same function
    batch = bench_train_step.first_batch(config)
    timed_total = bench_train_step.loss_terms_step(stepper, bench_train_step.captured_loss_inputs(stepper, batch))()
    first, second = batch
    distill_batch = stepper.generator_inputs(second, 0) if config.task == "generator" else (first, second)
    with torch.no_grad():
        expected = stepper.distiller(distill_batch)["total"]
    assert timed_total.item() == pytest.approx(expected.item(), rel=1e-5)
