"""Training: teacher, scratch-student and distillation runs from a RunConfig (gankd train / gankd distill)."""

from .checkpoint import CheckpointError, load_checkpoint
from .loop import TrainingError, evaluate, load_trained_model, run_directory, train

__all__ = [
    "CheckpointError",
    "TrainingError",
    "evaluate",
    "load_checkpoint",
    "load_trained_model",
    "run_directory",
    "train",
]
