"""Writing checkpoints: state dicts and plain data only, written atomically (reading is gankd.checkpoints)."""

import os
from pathlib import Path

import torch

from gankd.checkpoints import CheckpointError, find_checkpoint, load_checkpoint, trained_weights

__all__ = ["CheckpointError", "find_checkpoint", "load_checkpoint", "save_checkpoint", "trained_weights"]


def save_checkpoint(state: dict, path: Path) -> None:
    """Write `state` to a temporary file beside `path`, then rename it over `path` (never half-written)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(state, temporary)
    os.replace(temporary, path)
