"""Published network weights from local files only: where to find them, and checking they are the right ones.

The Inception network of standard FID/KID and the LPIPS backbones, used by gankd.metrics and by the LPIPS
training loss in gankd.losses (this module sits below both).

Each file is looked up, in order, at an explicit path (argument or config key), at the path in an
environment variable, and in torch hub's checkpoint cache under the name the upstream package would
download it to. Its size and full SHA-256 (pinned here; upstream's file names carry only their first 8 hex
digits) must be the published file's before anything loads it: torch-fidelity loads the Inception file with
`weights_only=False`, so only the exact published file may reach it. Nothing is ever downloaded: a missing or
wrong file raises `MetricWeightsError` saying what to put where.
"""

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch


class MetricWeightsError(FileNotFoundError):
    """The weights a standard metric needs are missing or are not the published file."""


@dataclass(frozen=True)
class WeightsFile:
    """A published weights file: its canonical name, full SHA-256, environment variable, purpose, size in
    bytes (None: not pinned) and where a user gives its path (`setting`)."""

    filename: str
    sha256: str
    env_var: str
    used_for: str
    size: int | None = None
    setting: str = "its path argument"

    @property
    def sha256_prefix(self) -> str:
        """The 8 hex digits upstream puts in the file name."""
        return self.sha256[:8]


INCEPTION_V3 = WeightsFile(
    filename="weights-inception-2015-12-05-6726825d.pth",
    sha256="6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2",
    env_var="GANKD_INCEPTION_WEIGHTS",
    used_for="standard FID/KID (torch-fidelity's inception-v3-compat)",
    size=95_628_359,
    setting="a run's eval.inception_weights, gankd eval --inception-weights",
)
LPIPS_BACKBONES = {
    "alex": WeightsFile(
        "alexnet-owt-7be5be79.pth",
        "7be5be791159472b1fbf3c69796f7cb30dca7ad8466c2df70058c37116cdee02",
        "GANKD_LPIPS_BACKBONE",
        "LPIPS (AlexNet backbone)",
        size=244_408_911,
        setting="a run's eval.lpips_weights, gankd eval --lpips-weights",
    ),
    "vgg": WeightsFile(
        "vgg16-397923af.pth",
        "397923af8e79cdbb6a7127f12361acd7a2f83e06b05044ddf496e83de57a5bf0",
        "GANKD_LPIPS_BACKBONE",
        "LPIPS (VGG16 backbone)",
        size=553_433_881,
        setting="a run's eval.lpips_weights, gankd eval --lpips-weights",
    ),
}

_verified: dict[tuple[str, int, int], str] = {}


def hub_checkpoint_path(weights: WeightsFile) -> Path:
    """Where torch hub (and so torch-fidelity and torchvision) would keep the file."""
    return Path(torch.hub.get_dir()) / "checkpoints" / weights.filename


def sha256_of(path: Path) -> str:
    """SHA-256 of a file, cached by (path, size, mtime) so repeated evaluations hash it once."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _verified:
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        _verified[key] = digest.hexdigest()
    return _verified[key]


def resolve_weights(weights: WeightsFile, explicit_path: str | os.PathLike | None = None) -> Path:
    """The verified local path of `weights`, or MetricWeightsError naming the file and where to put it."""
    if explicit_path is not None:
        source, path = "the path given", Path(explicit_path)
    elif os.environ.get(weights.env_var):
        source, path = f"${weights.env_var}", Path(os.environ[weights.env_var])
    else:
        source, path = "the torch hub cache", hub_checkpoint_path(weights)
    if not path.is_file():
        what = "is a folder, not the file" if path.is_dir() else "does not exist"
        raise MetricWeightsError(
            f"{weights.used_for} needs the file {weights.filename} (SHA-256 starting {weights.sha256_prefix}); "
            f"{source} points to {path}, which {what}. gankd never downloads: copy the file there, "
            f"or set {weights.env_var}=/path/to/{weights.filename}, or give its path ({weights.setting}) "
            f"(the torch hub cache is {hub_checkpoint_path(weights).parent})."
        )
    size = path.stat().st_size
    if weights.size is not None and size != weights.size:
        raise MetricWeightsError(
            f"{path} (from {source}) is not {weights.filename}: it has {size:,} bytes, the published file "
            f"{weights.size:,}. {weights.used_for[0].upper()}{weights.used_for[1:]} needs exactly that file."
        )
    digest = sha256_of(path)
    if digest != weights.sha256:
        raise MetricWeightsError(
            f"{path} (from {source}) is not {weights.filename}: its SHA-256 is {digest}, the published file's "
            f"is {weights.sha256}. {weights.used_for[0].upper()}{weights.used_for[1:]} needs exactly that file."
        )
    return path
