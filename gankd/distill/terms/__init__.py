"""Loss terms by name: each a registered LossTerm class with its options (see base.py).

Built in: output, ground_truth, lpips (images); feature, adapted, attention (tapped feature pairs);
kd, ce, logit_mse (classifier logits); adversarial (a discriminator).
"""

from .adversarial import AdversarialTerm
from .base import (
    RESERVED_NAMES,
    LossTerm,
    StepTensors,
    TermContext,
    build_term,
    build_terms,
    check_task,
    register_term,
    term_class,
    term_names,
    term_options,
)
from .features import AdaptedTerm, AttentionTerm, FeatureTerm
from .logits import CrossEntropyTerm, KDTerm, LogitMSETerm
from .outputs import GroundTruthTerm, LPIPSTerm, OutputTerm

__all__ = [
    "AdaptedTerm",
    "AdversarialTerm",
    "AttentionTerm",
    "CrossEntropyTerm",
    "FeatureTerm",
    "GroundTruthTerm",
    "KDTerm",
    "LPIPSTerm",
    "LogitMSETerm",
    "LossTerm",
    "OutputTerm",
    "StepTensors",
    "TermContext",
    "build_term",
    "build_terms",
    "RESERVED_NAMES",
    "check_task",
    "register_term",
    "term_class",
    "term_names",
    "term_options",
]
