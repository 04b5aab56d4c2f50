"""Distillation inside any training loop: a frozen teacher, a student, feature taps and named loss terms.

distiller = Distiller(teacher, student, task="image2image", feature_pairs={"blocks.1": "blocks.1"},
                      weights={"output": 1.0, "adapted": 0.5})
terms = distiller((inputs, targets))      # DistillTerms: {"output": ..., "adapted": ..., "total": ...}
terms["total"].backward()                 # optimizer over distiller.student_parameters()
"""

from gankd.distill.adapters import declared_channels, make_adapter_loss
from gankd.distill.distiller import Distiller
from gankd.distill.perceptual import LPIPSLoss
from gankd.distill.taps import FeatureTaps, resolve_module
from gankd.distill.terms import TASKS, TERM_NAMES, TERMS_BY_TASK, DistillTerms

__all__ = [
    "TASKS",
    "TERMS_BY_TASK",
    "TERM_NAMES",
    "DistillTerms",
    "Distiller",
    "FeatureTaps",
    "LPIPSLoss",
    "declared_channels",
    "make_adapter_loss",
    "resolve_module",
]
