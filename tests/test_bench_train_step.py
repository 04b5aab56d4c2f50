"""benchmarks/bench_train_step.py: rows from a real run; the loss-only timing runs the Distiller's own terms."""

import csv
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks import bench_train_step
from gankd.train.distributed import Distributed
from gankd.train.objective import build_objective
from gankd.train.stepper import Stepper

ROOT = Path(__file__).parent.parent


def test_bench_train_step_appends_a_row_per_workload(tmp_path):
    out = tmp_path / "train_step.csv"
    command = [sys.executable, "-m", "benchmarks.bench_train_step", "--batch", "2", "--reps", "1", "--device", "cpu",
               "--out", str(out)]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=ROOT)
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


@pytest.mark.parametrize("workload", ["digits_gan", "photos_sr", "digits_cls"])
def test_timed_terms_are_the_trainers_terms_on_its_batch(workload):
    # The loss-only callable runs the Distiller's compute_terms on what a training step's forward captured:
    # with batch norm from running statistics, its total is the step's.
    config = bench_train_step.workload_config(workload, "reference", "fp32", 3, "cpu")
    dist = Distributed()
    stepper = Stepper(config, dist, build_objective(config, dist, bench_train_step.random_teacher(config)))
    stepper.distiller.eval()
    data = bench_train_step.first_batch(config)
    timed_total = bench_train_step.loss_terms_step(stepper, data)()
    batch = stepper.task.from_data(data, stepper.model, stepper.noise(0, 0, 3))
    with torch.no_grad():
        expected = stepper.distiller(batch)["total"]
    assert timed_total.item() == pytest.approx(expected.item(), rel=1e-5)
    assert any(parameter.grad is not None for parameter in stepper.distiller.terms.parameters()) == (
        workload == "digits_gan"  # the adapters of the digits workload get gradients from the timed terms
    )
