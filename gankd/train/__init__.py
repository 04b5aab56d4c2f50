"""Training: teacher, scratch-student and distillation runs from a RunConfig (gankd train / gankd distill)."""

from .checkpoint import CheckpointError, load_checkpoint
from .generate import generate
from .loop import TrainingError, evaluate, load_trained_model, resumed_config, run_directory, train
from .objective import model_inputs
from .teacher import Teacher, load_teacher

__all__ = [
    "CheckpointError",
    "Teacher",
    "TrainingError",
    "evaluate",
    "generate",
    "load_checkpoint",
    "load_teacher",
    "load_trained_model",
    "model_inputs",
    "resumed_config",
    "run_directory",
    "train",
]
