"""The README's results section is exactly what benchmarks/results_table.py makes from the committed CSVs."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).parent.parent


def load_script():
    spec = importlib.util.spec_from_file_location("results_table", ROOT / "benchmarks" / "results_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_results_match_the_csvs():
    script = load_script()
    assert script.section() in (ROOT / "README.md").read_text(), "run: python -m benchmarks.results_table --write"


def test_compression_table_means_and_stds(tmp_path):
    script = load_script()
    rows = [dict(task="digits_cls", variant=variant, seed=str(seed), metric=metric, value=str(value), device="cpu",
                 commit="x")
            for variant, macs in (("teacher", 8e6), ("scratch", 1e6), ("distilled", 1e6))
            for seed in (0, 1)
            for metric, value in (("params", 10), ("macs", macs), ("latency_b1_ms", 1.0), ("latency_b64_ms", 2.0),
                                  ("accuracy", 0.9 + 0.02 * seed))]  # fmt: skip
    table = "\n".join(script.compression_tables(rows))
    assert "| distilled | 10 | 1.00 M | 1/8.0 | 1.00 ± 0.00 | 2.0 ± 0.0 | 0.910 ± 0.014 | — |" in table
    rows += [dict(task="digits_cls", variant="bicubic", seed="0", metric="accuracy", value="0.5")]
    table = "\n".join(script.compression_tables(rows))
    assert "| bicubic (no model) | — | — | — | — | — | 0.500 | — |" in table  # a reference without a model
    assert "| fid |" not in table.splitlines()[2]  # no standard-metric column without its rows
    rows += [dict(task="digits_cls", variant="teacher", seed="0", metric="lpips", value="0.25")]
    table = "\n".join(script.compression_tables(rows))
    assert "| teacher | 10 | 8.00 M | 1/1.0 | 1.00 ± 0.00 | 2.0 ± 0.0 | 0.910 ± 0.014 | — | 0.2500 |" in table


def test_ablation_table_compares_each_term_set_with_scratch():
    script = load_script()
    rows = [dict(task="digits_gan", variant=variant, seed=str(seed), metric=metric, value=str(value))
            for variant, fd in (("scratch", 10.0), ("output", 8.0), ("+feature", 6.0))
            for seed in (0, 1)
            for metric, value in (("fd_digits", fd + seed), ("kid_digits", 0.01))]  # fmt: skip
    table = "\n".join(script.ablation_table(rows))
    assert "| scratch | (no teacher) | 10.500 ± 0.707 | 1.00× | 0.0100 ± 0.0000 |" in table
    assert "| +feature | `{output: 1.0, adapted: 1.0}` | 6.500 ± 0.707 | 0.62× | 0.0100 ± 0.0000 |" in table
    assert "+attention" not in table  # term sets without rows are left out


def test_train_step_table_keeps_the_latest_row_per_case():
    script = load_script()
    base = dict(device="cpu", workload="digits_gan", precision="fp32", batch="64", provider="reference")
    rows = [base | dict(step_ms="100", images_per_s="640", loss_ms="5", loss_share="0.05"),
            base | dict(step_ms="50", images_per_s="1280", loss_ms="5", loss_share="0.1")]  # fmt: skip
    table = script.train_step_table(rows)
    assert table[2:] == ["| cpu | digits_gan | fp32 | 64 | reference | 50.0 | 1280 | 5.00 | 10.0% |"]


def test_targets_table_says_met_or_missed_from_the_means():
    script = load_script()
    values = {("teacher", "macs"): [8e6, 8e6], ("scratch", "macs"): [1e6, 1e6], ("distilled", "macs"): [1e6, 1e6],
              ("teacher", "fd_digits"): [2.0, 2.0], ("scratch", "fd_digits"): [4.0, 6.0],
              ("distilled", "fd_digits"): [2.0, 3.0], ("scratch", "accuracy"): [0.9, 0.9],
              ("distilled", "accuracy"): [0.905, 0.905]}  # fmt: skip
    rows = [dict(task="digits_cls" if metric == "accuracy" else "digits_gan", variant=variant, seed=str(seed),
                 metric=metric, value=str(value))
            for (variant, metric), pair in values.items() for seed, value in enumerate(pair)]  # fmt: skip
    table = script.targets_table(rows)
    assert "| digits_gan | distilled MACs ≤ 1/8 of the teacher's | 0.125× | met |" in table
    assert "| digits_gan | distilled fd_digits ≤ 0.8 × scratch's | 0.5× | met |" in table
    assert "| digits_gan | distilled fd_digits ≤ 1.3 × teacher's | 1.25× | met |" in table
    assert "| digits_cls | distilled accuracy − scratch's ≥ +0.01 (1 point) | +0.005 | missed |" in table
    assert not any("photos_sr" in line for line in table)  # no rows, no claim
