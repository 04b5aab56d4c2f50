"""The shipped run configs, installed with gankd as the package data of `gankd.configs`.

gankd.configs.path("digits_cnn_teacher")   # the YAML file, from a checkout or an installed wheel
gankd.configs.names()                      # every shipped config, by name
"""

from importlib import resources
from pathlib import Path


def names() -> list[str]:
    """The shipped config names (file names without .yaml), sorted."""
    return sorted(entry.name.removesuffix(".yaml") for entry in resources.files(__name__).iterdir()
                  if entry.name.endswith(".yaml"))  # fmt: skip


def path(name: str) -> Path:
    """The file of shipped config `name`; ValueError listing the names when there is none."""
    candidate = resources.files(__name__) / f"{name}.yaml"
    if not candidate.is_file():
        raise ValueError(f"no shipped config {name!r}; shipped configs: {', '.join(names())}")
    return Path(str(candidate))
