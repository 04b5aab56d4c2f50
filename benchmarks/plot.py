"""Draw the benchmark figures from the CSVs under benchmarks/results/ (and nothing else).

python benchmarks/plot.py            # writes benchmarks/results/<kernel>_<device>.png
"""

import argparse
import csv
import re
from collections import defaultdict
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def latest_rows(path: Path) -> list[dict]:
    """The last row measured for each (kernel, provider, dtype, shape, device)."""
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    latest = {}
    for row in rows:
        latest[(row["kernel"], row["provider"], row["dtype"], row["shape"], row["device"])] = row
    return list(latest.values())


def plot_kernels(csv_path: Path, out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = defaultdict(list)
    for row in latest_rows(csv_path):
        groups[(row["kernel"], row["device"])].append(row)
    written = []
    for (kernel, device), rows in sorted(groups.items()):
        dtypes = sorted({row["dtype"] for row in rows})
        fig, axes = plt.subplots(1, len(dtypes), figsize=(6 * len(dtypes), 4), squeeze=False)
        for axis, dtype in zip(axes[0], dtypes, strict=True):
            subset = [row for row in rows if row["dtype"] == dtype]
            shapes = sorted({row["shape"] for row in subset}, key=lambda s: [int(n) for n in s.split("x")])
            providers = sorted({row["provider"] for row in subset})
            width = 0.8 / len(providers)
            for index, provider in enumerate(providers):
                by_shape = {row["shape"]: float(row["gbps"]) for row in subset if row["provider"] == provider}
                positions = [i + index * width for i, shape in enumerate(shapes) if shape in by_shape]
                axis.bar(positions, [by_shape[s] for s in shapes if s in by_shape], width, label=provider)
            axis.set_xticks([i + 0.4 - width / 2 for i in range(len(shapes))], shapes, rotation=20)
            axis.set_ylabel("GB/s (forward + backward, minimum bytes)")
            axis.set_title(f"{kernel} {dtype}")
            axis.legend(fontsize=8)
        fig.suptitle(device, fontsize=9)
        fig.tight_layout()
        out = out_dir / f"{kernel}_{re.sub(r'[^A-Za-z0-9]+', '_', device).strip('_').lower()}.png"
        fig.savefig(out, dpi=120)
        plt.close(fig)
        written.append(out)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kernels-csv", type=Path, default=RESULTS / "kernels.csv")
    parser.add_argument("--out-dir", type=Path, default=None, help="default: the CSV's folder")
    args = parser.parse_args()
    if not args.kernels_csv.exists():
        raise SystemExit(f"{args.kernels_csv} does not exist: run a bench_<op>.py script first")
    for path in plot_kernels(args.kernels_csv, args.out_dir or args.kernels_csv.parent):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
