"""Loss-term names, which tasks take which, the batch each task expects, and DistillTerms (what a step returns)."""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping

import torch
from torch import Tensor

TASKS = ("generator", "image2image", "classifier")
# Term names in the order they are computed and listed.
TERM_NAMES = ("output", "ground_truth", "feature", "adapted", "attention", "lpips", "adversarial", "kd", "ce")
TERMS_BY_TASK = {
    "generator": ("output", "feature", "adapted", "attention", "lpips", "adversarial"),
    "image2image": ("output", "ground_truth", "feature", "adapted", "attention", "lpips", "adversarial"),
    "classifier": ("kd", "ce", "feature", "adapted", "attention"),
}
FEATURE_TERMS = ("feature", "adapted", "attention")  # the terms computed on tapped feature pairs
TEACHER_TERMS = ("output", "feature", "adapted", "attention", "lpips", "kd")  # the terms that run the teacher
# What each task's batch pair holds.
BATCH_FIELDS = {
    "generator": ("noise", "labels"),
    "image2image": ("inputs", "targets"),
    "classifier": ("images", "labels"),
}
BATCH_FORMATS = {
    "generator": "(noise, labels) with labels None for an unconditional generator",
    "image2image": "(inputs, targets) with targets None when no 'ground_truth' term is weighted",
    "classifier": "(images, labels) with labels None when no 'ce' term is weighted",
}


def check_weights(weights: object, task: str) -> dict[str, float]:
    """The positively weighted terms of `weights` ({term name: weight}), in TERM_NAMES order.

    Unknown names, names the task does not take, weights that are not finite numbers >= 0, and a mapping
    that weights no term raise ValueError or TypeError listing what is valid.
    """
    if not isinstance(weights, Mapping):
        raise TypeError(f"weights must be a dict of term name -> weight, got {type(weights).__name__}")
    valid = TERMS_BY_TASK[task]
    for name, weight in weights.items():
        if name not in TERM_NAMES:
            raise ValueError(f"unknown loss term {name!r}; valid terms for task {task!r}: {', '.join(valid)}")
        if name not in valid:
            owner = [other for other in TASKS if name in TERMS_BY_TASK[other]]
            raise ValueError(
                f"loss term {name!r} belongs to task {' or '.join(map(repr, owner))}, not {task!r}; "
                f"valid terms for task {task!r}: {', '.join(valid)}"
            )
        if isinstance(weight, bool) or not isinstance(weight, numbers.Real):
            raise TypeError(f"weight of {name!r} must be a number, got {type(weight).__name__} {weight!r}")
        if not math.isfinite(weight) or weight < 0:
            raise ValueError(f"weight of {name!r} must be a finite number >= 0, got {weight}")
    active = {name: float(weights[name]) for name in TERM_NAMES if weights.get(name, 0) > 0}
    if not active:
        raise ValueError(f"weights select no loss term: give at least one of {', '.join(valid)} a weight > 0")
    return active


def check_feature_pairs(feature_pairs: object) -> tuple[tuple[str, str], ...]:
    """{student module path: teacher module path} as a tuple of (student, teacher) pairs, in order."""
    if feature_pairs is None:
        return ()
    if not isinstance(feature_pairs, Mapping):
        raise TypeError(
            f"feature_pairs must be a dict {{student module path: teacher module path}}, got "
            f"{type(feature_pairs).__name__}"
        )
    for student_path, teacher_path in feature_pairs.items():
        if not isinstance(student_path, str) or not isinstance(teacher_path, str):
            raise TypeError(
                f"feature_pairs maps module paths (str) to module paths, got {student_path!r}: {teacher_path!r}"
            )
    return tuple(feature_pairs.items())


class DistillTerms(dict):
    """The loss terms of one distillation step: {term name: unweighted float32 scalar} plus "total".

    "total" is the weighted sum of the other entries: backpropagate it. The entries keep their graphs;
    `to_floats()` gives plain numbers for logging (one device-to-host copy for all of them).
    """

    @property
    def total(self) -> Tensor:
        return self["total"]

    def to_floats(self) -> dict[str, float]:
        values = torch.stack([value.detach().float() for value in self.values()]).tolist()
        return dict(zip(self.keys(), values, strict=True))
