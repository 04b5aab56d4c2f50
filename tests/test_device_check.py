"""The GPU run's two halves: benchmarks/device_check.sh refuses to run without CUDA, and
benchmarks/ingest_device_results.py takes a device run's CSVs into the results, figures and README."""

import csv
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks import ingest_device_results
from benchmarks.results_table import END, START

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = Path(__file__).parent / "data" / "device_sample"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the behaviour without a CUDA device")
def test_device_check_says_there_is_no_gpu_and_exits_2(tmp_path):
    result = subprocess.run(["bash", str(ROOT / "benchmarks" / "device_check.sh"), str(tmp_path / "out")],
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 2
    assert "no CUDA device" in result.stdout
    assert "no CUDA device" in (tmp_path / "out" / "device_check.log").read_text()


def _results_and_readme(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    for name in ("kernels.csv", "train_step.csv"):
        shutil.copy(ROOT / "benchmarks" / "results" / name, results / name)
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\n{START}\nold\n{END}\n\ntail\n")
    return results, readme


def test_ingest_appends_gpu_rows_draws_figures_and_rewrites_the_readme(tmp_path):
    results, readme = _results_and_readme(tmp_path)
    before = {name: (results / name).read_text() for name in ("kernels.csv", "train_step.csv")}
    drawn = ingest_device_results.ingest(SAMPLE, results, readme)
    for name in ("kernels.csv", "train_step.csv"):
        text = (results / name).read_text()
        assert text.startswith(before[name]) and text.count("test fixture GPU") == 2
    for name in ("tune_softmax_kl.csv", "tune_feature_match.csv", "profile_ops.csv"):  # new here: no figure
        assert (results / name).read_text() == (SAMPLE / name).read_text()
    assert any(path.name.startswith("softmax_kl_test_fixture_gpu") for path in drawn)
    assert all(path.is_file() for path in drawn)
    section = readme.read_text()
    assert section.startswith("# title") and section.endswith("tail\n") and "old" not in section
    assert "GPU rows: see the tables." in section and "test fixture GPU" in section


def test_ingest_refuses_cpu_rows_and_other_columns_before_writing(tmp_path):
    results, readme = _results_and_readme(tmp_path)
    unchanged = (results / "kernels.csv").read_text()
    cpu = tmp_path / "cpu"
    cpu.mkdir()
    shutil.copy(ROOT / "benchmarks" / "results" / "kernels.csv", cpu / "kernels.csv")
    with pytest.raises(SystemExit, match="rows were measured on a CPU"):
        ingest_device_results.ingest(cpu, results, readme)
    other = tmp_path / "other"
    other.mkdir()
    with (other / "train_step.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows([["workload", "ms"], ["digits_gan", "1.0"]])
    with pytest.raises(SystemExit, match=r"train_step.csv: columns \['workload', 'ms'\] are not"):
        ingest_device_results.ingest(other, results, readme)
    with pytest.raises(SystemExit, match="holds none of kernels.csv, train_step.csv, tune_softmax_kl.csv"):
        ingest_device_results.ingest(tmp_path / "empty", results, readme)
    assert (results / "kernels.csv").read_text() == unchanged and "old" in readme.read_text()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the behaviour without a CUDA device")
@pytest.mark.parametrize("tool", ["tune_softmax_kl", "tune_feature_match", "profile_ops"])
def test_gpu_tuning_tools_say_they_need_cuda(tool, tmp_path):
    result = subprocess.run([sys.executable, "-m", f"benchmarks.{tool}", "--out", str(tmp_path / "out.csv")], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 1 and f"{tool} needs a CUDA device" in result.stderr
    assert not (tmp_path / "out.csv").exists()


def test_tune_configs_parse_with_their_pass_order():
    from benchmarks.tune_softmax_kl import parse_config

    assert parse_config("4096:8:2") == (4096, 8, 2, "a") and parse_config("2048:4:4:o") == (2048, 4, 4, "o")
    for bad in ("4096:8", "4096:8:2:x", "4096:8:2:a:1", "4096:x:2", "0:8:2"):
        with pytest.raises(SystemExit, match=f"BLOCK_V:warps:per_sm\\[:a\\|o\\], got '{bad}'"):
            parse_config(bad)


def test_feature_match_sweep_configs_parse():
    from benchmarks.tune_feature_match import parse_config

    assert parse_config("mse:4096:8") == ("mse", 4096, 8) and parse_config("cosine:64:4") == ("cosine", 64, 4)
    for bad in ("mse:4096", "l1:4096:4", "mse:x:4", "cosine:128:0"):
        with pytest.raises(SystemExit, match=f"mse\\|cosine:block:warps, got '{bad}'"):
            parse_config(bad)
