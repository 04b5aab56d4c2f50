"""gankd as a user installs it: a wheel built from the sources, installed into a fresh virtual environment,
runs `gankd demo` from a folder with no gankd checkout around (the shipped configs are package data)."""

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).parent.parent
SOURCES = ("pyproject.toml", "README.md", "gankd", "kernels", "configs")


def run(command: list, **options) -> subprocess.CompletedProcess:
    result = subprocess.run([str(part) for part in command], capture_output=True, text=True, timeout=900, **options)
    assert result.returncode == 0, f"{' '.join(map(str, command))}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    return result


def test_gankd_demo_runs_from_a_wheel_in_a_fresh_environment(tmp_path, proxy_cache):
    # Build the wheel from a copy of the sources (the checkout stays clean), without network or isolation.
    source = tmp_path / "source"
    source.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(ROOT / name, source / name)
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "--quiet",
         "-w", tmp_path / "dist", source])  # fmt: skip
    (wheel,) = (tmp_path / "dist").glob("gankd-*.whl")

    # A fresh environment. Its dependencies (torch, torchvision, ...) come from this one's site-packages on a
    # plain path line: that exposes the installed packages, not this environment's editable gankd.
    fresh = tmp_path / "fresh"
    run([sys.executable, "-m", "venv", fresh])
    fresh_python = fresh / "bin" / "python"
    purelib = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    fresh_site = Path(run([fresh_python, "-c", purelib]).stdout.strip())
    (fresh_site / "outer_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    run([fresh_python, "-m", "pip", "install", "--no-deps", "--no-index", "--quiet", wheel])

    workdir = tmp_path / "elsewhere"  # no configs/ and no gankd sources here
    workdir.mkdir()
    environment = os.environ | {"GANKD_CACHE": str(proxy_cache.parent), "OMP_NUM_THREADS": "2"}
    environment.pop("PYTHONPATH", None)
    located = run([fresh_python, "-c", "import gankd, gankd.configs; print(gankd.__file__); "
                   "print(gankd.configs.path('digits_dcgan_teacher'))"], cwd=workdir, env=environment)  # fmt: skip
    assert all(line.startswith(str(fresh_site)) for line in located.stdout.split()), located.stdout
    demo = run([fresh / "bin" / "gankd", "demo", "--output-dir", "out", "--set", "steps=2", "--set",
                "eval.num_samples=64"], cwd=workdir, env=environment)  # fmt: skip
    assert "| distilled |" in demo.stdout and "| scratch |" in demo.stdout
    (report,) = (workdir / "out").glob("demo-*/report.md")
    rows = {row["variant"]: row for row in json.loads((report.parent / "metrics.json").read_text())["rows"]}
    assert set(rows) == {"teacher", "distilled", "scratch"} and rows["distilled"]["macs"] * 8 <= rows["teacher"]["macs"]
    assert all(row["fd_digits"] > 0 for row in rows.values())
