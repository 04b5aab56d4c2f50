"""Checkpoints: state dicts and plain data only, written atomically, read with weights_only=True."""

import os
from pathlib import Path

import torch


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, unreadable or not a gankd checkpoint."""


REQUIRED_KEYS = ("step", "config", "model")


def save_checkpoint(state: dict, path: Path) -> None:
    """Write `state` to a temporary file beside `path`, then rename it over `path` (never half-written)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(state, temporary)
    os.replace(temporary, path)


def find_checkpoint(location: str | Path) -> Path:
    """A checkpoint file, or a run directory whose checkpoints/last.pt is taken."""
    location = Path(location)
    if location.is_dir():
        candidate = location / "checkpoints" / "last.pt"
        if not candidate.is_file():
            raise CheckpointError(f"{location} is a directory without checkpoints/last.pt: not a finished gankd run")
        return candidate
    if not location.is_file():
        raise CheckpointError(f"checkpoint {location} does not exist (give a run directory or a .pt file)")
    return location


def load_checkpoint(location: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Load a gankd checkpoint safely (weights_only=True); clear errors for missing or corrupt files."""
    path = find_checkpoint(location)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises several types for truncated or foreign files
        raise CheckpointError(f"cannot read checkpoint {path}: {type(error).__name__}: {error}") from error
    if not isinstance(state, dict) or any(key not in state for key in REQUIRED_KEYS):
        raise CheckpointError(f"{path} is not a gankd checkpoint (needs keys {REQUIRED_KEYS})")
    return state
