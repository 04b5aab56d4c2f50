"""Distillation inside any training loop: a student, an optional frozen teacher, feature taps and named
loss terms from a registry.

distiller = Distiller(teacher, student, task="image2image",
                      terms={"output": 1.0, "adapted": {"weight": 0.5, "pairs": {"blocks.1": "blocks.1"}}})
terms = distiller((inputs, targets))      # DistillTerms: {"output": ..., "adapted": ..., "total": ...}
terms["total"].backward()                 # optimizer over distiller.student_parameters()
"""

from gankd.distill.adapters import declared_channels
from gankd.distill.distiller import TEACHER_MODES, Distiller, DistillTerms
from gankd.distill.phases import DiscriminatorPhase, StudentPhase
from gankd.distill.taps import FeatureTaps, resolve_module
from gankd.distill.terms import LossTerm, StepTensors, TermContext, register_term, term_names

__all__ = [
    "TEACHER_MODES",
    "DiscriminatorPhase",
    "DistillTerms",
    "Distiller",
    "FeatureTaps",
    "LossTerm",
    "StepTensors",
    "StudentPhase",
    "TermContext",
    "declared_channels",
    "register_term",
    "resolve_module",
    "term_names",
]
