"""Training: teacher, scratch-student and distillation runs from a RunConfig (gankd train / gankd distill)."""

from .checkpoint import CheckpointError, load_checkpoint
from .loop import TrainingError, evaluate, run_directory, train

__all__ = ["CheckpointError", "TrainingError", "evaluate", "load_checkpoint", "run_directory", "train"]
