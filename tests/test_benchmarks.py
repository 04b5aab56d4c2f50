"""The benchmark scripts run end to end on a tiny shape and write well-formed rows and plots."""

import csv
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).parent.parent


def test_bench_softmax_kl_appends_rows_and_plot_draws_them(tmp_path):
    out = tmp_path / "kernels.csv"
    command = [sys.executable, "-m", "benchmarks.bench_softmax_kl", "--shapes", "8x50,4x300", "--dtypes",
               "fp32,bf16", "--providers", "reference,gankd_triton", "--reps", "2", "--out", str(out)]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    with out.open() as handle:
        rows = list(csv.DictReader(handle))
    providers = ["reference", "gankd_triton"] if torch.cuda.is_available() else ["reference"]
    expected = [(p, d, s) for p in providers for d in ("fp32", "bf16") for s in ("8x50", "4x300")]
    assert [(row["provider"], row["dtype"], row["shape"]) for row in rows] == expected
    for row in rows:
        assert row["kernel"] == "softmax_kl"
        assert float(row["ms"]) > 0 and float(row["gbps"]) > 0 and float(row["bw_fraction"]) > 0
        assert row["torch"] and row["device"] and row["commit"]
    if not torch.cuda.is_available():
        assert "not measured here: gankd_triton" in result.stdout

    plotted = subprocess.run([sys.executable, "-m", "benchmarks.plot", "--kernels-csv", str(out)],
                             capture_output=True, text=True, timeout=300, cwd=ROOT)  # fmt: skip
    assert plotted.returncode == 0, plotted.stderr
    images = list(tmp_path.glob("softmax_kl_*.png"))
    assert len(images) == 1 and images[0].stat().st_size > 10_000


def test_bench_feature_match_appends_a_row_per_op(tmp_path):
    out = tmp_path / "kernels.csv"
    command = [sys.executable, "-m", "benchmarks.bench_feature_match", "--shapes", "2x3x5x5", "--dtypes", "bf16",
               "--providers", "reference", "--reps", "1", "--out", str(out)]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    with out.open() as handle:
        rows = list(csv.DictReader(handle))
    assert [row["kernel"] for row in rows] == ["feature_match_mse", "feature_match_cosine", "attention_transfer"]
    assert all(row["shape"] == "2x3x5x5" and float(row["gbps"]) > 0 for row in rows)


def _write_csv(path: Path, rows: list[dict]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_plot_draws_compression_ablation_and_train_step_figures(tmp_path):
    quality = {"digits_gan": "fd_digits", "photos_sr": "psnr", "digits_cls": "accuracy"}
    compression = [dict(task=task, variant=variant, seed=seed, metric=metric, value=value, device="cpu", commit="x")
                   for task, name in quality.items()
                   for variant, macs in (("teacher", 8e6), ("scratch", 1e6), ("distilled", 1e6))
                   for seed in (0, 1)
                   for metric, value in (("macs", macs), (name, 5 + seed), ("kid_digits", 0.01))]  # fmt: skip
    ablation = [row | {"task": "digits_gan", "variant": variant} for variant in ("scratch", "output", "+feature")
                for row in compression if row["task"] == "digits_gan" and row["variant"] == "teacher"]  # fmt: skip
    train_step = [dict(workload=workload, provider="reference", precision="fp32", batch=8, step_ms=10,
                       images_per_s=800, loss_ms=1, loss_share=0.1, device="cpu (test)", torch="x", triton="x",
                       commit="x") for workload in ("digits_gan", "photos_sr")]  # fmt: skip
    command = [sys.executable, "-m", "benchmarks.plot",
               "--compression-csv", str(_write_csv(tmp_path / "compression.csv", compression)),
               "--ablation-csv", str(_write_csv(tmp_path / "ablation.csv", ablation)),
               "--train-step-csv", str(_write_csv(tmp_path / "train_step.csv", train_step))]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    for name in ("compression.png", "ablation.png", "train_step_cpu_test.png"):
        assert (tmp_path / name).stat().st_size > 10_000, name
