"""gankd checkpoint files: finding and reading them safely, and which of their weights are the trained ones.

A checkpoint is a dict of state dicts and plain data (at least "step", "config" and "model"), written by
gankd.train and read here with weights_only=True, so a file can never run code. This module sits low (it
needs only torch) so that model loading (gankd.models) and training (gankd.train) share one reader.
"""

from pathlib import Path

import torch


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, unreadable or not a gankd checkpoint."""


REQUIRED_KEYS = ("step", "config", "model")


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


def is_checkpoint(state: object) -> bool:
    """Whether a loaded object is a gankd checkpoint (rather than, say, a bare state dict)."""
    return isinstance(state, dict) and all(key in state for key in REQUIRED_KEYS)


def load_checkpoint(location: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Load a gankd checkpoint safely (weights_only=True); clear errors for missing or corrupt files."""
    path = find_checkpoint(location)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises several types for truncated or foreign files
        # torch's own message advises weights_only=False, which would run whatever code the file holds: never.
        raise CheckpointError(
            f"cannot read checkpoint {path} as tensors and plain data: the file is corrupt (a write cut short?) or "
            f"not a gankd checkpoint ({type(error).__name__}); gankd never loads a file that could run code"
        ) from None
    if not is_checkpoint(state):
        raise CheckpointError(f"{path} is not a gankd checkpoint (needs keys {REQUIRED_KEYS})")
    return state


def trained_weights(state: dict) -> dict:
    """The weights a run produced: its EMA average when it kept one, else the trained model's."""
    if state.get("ema") is None:
        return state["model"]
    return {key.removeprefix("module."): value for key, value in state["ema"].items() if key != "n_averaged"}
