"""`gankd models`: the table lists every model with its real cost, and the README shows the same table."""

import re
from pathlib import Path

import gankd.models as models
from gankd.cli import main

README = Path(__file__).parent.parent / "README.md"


def test_gankd_models_lists_every_model_with_params_and_macs(capsys):
    main(["models"])
    table = capsys.readouterr().out
    rows = [line.split("|")[1:-1] for line in table.splitlines() if line.startswith("| ") and "---" not in line]
    names = {cells[0].strip() for cells in rows[1:]}
    assert names == set(models.names())
    resnet_g = {cells[1].strip(): [cell.strip() for cell in cells] for cells in rows if cells[0].strip() == "resnet_g"}
    assert resnet_g["teacher"][2:6] == ["ngf=64", "1x3x256x256", "11.378", "49,551.5"]  # CycleGAN's generator
    student_macs = next(r["macs"] for r in models.cost_table() if r["name"] == "resnet_g" and r["role"] == "student")
    assert resnet_g["student"][5] == f"{student_macs / 1e6:,.1f}"
    assert resnet_g["student"][6] == f"{49_551_507_456 / student_macs:.1f}"


def test_the_readme_table_is_the_commands_output(capsys):
    main(["models"])
    table = [line for line in capsys.readouterr().out.splitlines() if line.startswith("|")]
    readme = README.read_text()
    assert "gankd models" in readme
    assert re.search(re.escape("\n".join(table)), readme), "README table differs from `gankd models`: paste it again"
