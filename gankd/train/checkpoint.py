"""Writing checkpoints: state dicts and plain data only, written atomically (reading is gankd.checkpoints)."""

import contextlib
import os
from pathlib import Path

import torch

from gankd.checkpoints import CheckpointError, find_checkpoint, load_checkpoint, trained_weights

__all__ = ["CheckpointError", "find_checkpoint", "load_checkpoint", "save_checkpoint", "trained_weights"]


def save_checkpoint(state: dict, path: Path) -> None:
    """Write `state` to a temporary file beside `path`, then rename it over `path` (never half-written)."""
    temporary = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(state, temporary)
        os.replace(temporary, path)
    except (OSError, RuntimeError) as error:  # torch.save reports a full disk or a closed file as RuntimeError
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise CheckpointError(f"cannot write the checkpoint {path} ({' '.join(str(error).split())}); any earlier "
                              "checkpoint there is unchanged: free disk space or make the folder writable, then "
                              "continue with --resume") from error  # fmt: skip
