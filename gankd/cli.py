"""The `gankd` command: `gankd models` lists the model zoo with parameters and MACs."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any


def format_table(rows: list[dict[str, Any]]) -> str:
    """The cost table as Markdown: params and MACs in millions; a student row also shows how many times
    fewer MACs it needs than the teacher row of the same model."""
    lines = [
        "| model | role | options | input | params (M) | MACs (M) | teacher MACs / student MACs |",
        "| --- | --- | --- | --- | ---: | ---: | ---: |",
    ]
    teacher_macs: dict[str, int] = {}
    for row in rows:
        if row["role"] == "teacher":
            teacher_macs[row["name"]] = row["macs"]
        saving = f"{teacher_macs[row['name']] / row['macs']:.1f}" if row["role"] == "student" else ""
        cells = (row["name"], row["role"], row["options"] or "defaults", row["input"],
                 f"{row['params'] / 1e6:,.3f}", f"{row['macs'] / 1e6:,.1f}", saving)  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _models(arguments: argparse.Namespace) -> None:
    from gankd.models import cost_table

    print(format_table(cost_table()))
    print()
    print("Batch 1 at each model's default input size; MACs = torch.utils.flop_counter FLOPs / 2 (conv, matmul).")


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the `gankd` console script."""
    parser = argparse.ArgumentParser(prog="gankd", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    models = commands.add_parser("models", help="list the model zoo with params and MACs at default sizes")
    models.set_defaults(run=_models)
    arguments = parser.parse_args(argv)
    arguments.run(arguments)


if __name__ == "__main__":
    main()
