"""The local half of a GPU run: take the CSVs that benchmarks/device_check.sh wrote on the GPU machine into
benchmarks/results/ (the benchmarks' rows, the launch sweeps, the per-kernel profile), redraw the
figures and regenerate the README's results section.

    python -m benchmarks.ingest_device_results /work/.device/out     # the folder the GPU run's files came to

Only rows measured on a GPU are taken (a CPU row in a device folder means the run went wrong); a file whose
columns are not the benchmark's is refused, naming the file and the columns that differ. Nothing is
written unless every file checks out.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from benchmarks import plot, profile_ops, tune_feature_match, tune_softmax_kl
from benchmarks.bench_common import KERNEL_COLUMNS, append_rows
from benchmarks.bench_train_step import COLUMNS as TRAIN_STEP_COLUMNS
from benchmarks.results_table import RESULTS, ROOT, section, write_section

# The CSVs a device run writes, with their columns; each is appended to the file of the same name.
DEVICE_FILES = {"kernels.csv": KERNEL_COLUMNS, "train_step.csv": TRAIN_STEP_COLUMNS,
                "tune_softmax_kl.csv": tune_softmax_kl.COLUMNS, "tune_feature_match.csv": tune_feature_match.COLUMNS,
                "profile_ops.csv": profile_ops.COLUMNS}  # fmt: skip


def read_device_rows(folder: Path) -> dict[str, list[dict]]:
    """{file name: GPU rows} of the device CSVs in `folder`; SystemExit naming what is wrong."""
    found = {}
    for name, columns in DEVICE_FILES.items():
        path = folder / name
        if not path.is_file():
            continue
        with path.open(newline="") as handle:
            reader = csv.DictReader(handle)
            if reader.fieldnames != columns:
                raise SystemExit(f"{path}: columns {reader.fieldnames} are not {columns}; was it written by "
                                 "another version of the benchmark?")  # fmt: skip
            rows = list(reader)
        cpu_rows = [row for row in rows if row["device"].startswith("cpu")]
        if cpu_rows:
            raise SystemExit(f"{path}: {len(cpu_rows)} rows were measured on a CPU ({cpu_rows[0]['device']!r}); "
                             "a device run must measure on its GPU")  # fmt: skip
        found[name] = rows
    if not found:
        raise SystemExit(f"{folder} holds none of {', '.join(DEVICE_FILES)}: is it the device run's output folder?")
    return found


def ingest(folder: Path, results: Path = RESULTS, readme: Path = ROOT / "README.md") -> list[Path]:
    """Append the device rows to `results`, redraw their figures and rewrite `readme`'s results section;
    returns the figures drawn."""
    drawn = []
    for name, rows in read_device_rows(folder).items():
        append_rows(results / name, rows, DEVICE_FILES[name])
        print(f"appended {len(rows)} rows to {results / name}")
        if name.removesuffix(".csv") in plot.PLOTS:  # the sweep and the profile are tables for NOTES.md
            drawn += plot.PLOTS[name.removesuffix(".csv")](results / name, results)
    write_section(section(results), readme)
    return drawn


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="where the device run's files are (its $OUT)")
    args = parser.parse_args()
    for path in ingest(args.folder):
        print(f"wrote {path}")
    print("README.md results section updated")


if __name__ == "__main__":
    main()
