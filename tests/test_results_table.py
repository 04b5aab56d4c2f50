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
    assert script.section() in (ROOT / "README.md").read_text(), "run: python benchmarks/results_table.py --write"


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
