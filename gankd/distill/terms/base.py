"""LossTerm, the registry of terms by name, and what a term reads in one step (StepTensors).

A term is one registered class: its options are its constructor's keyword arguments, its `weight` is
applied by the objective (gankd.distill.Distiller), and `forward(step)` returns the unweighted loss. The
class attributes say what it needs, so the Distiller can check a configuration before the first step:

    @gankd.distill.register_term("logit_l1")
    class LogitL1(gankd.distill.LossTerm):
        needs_teacher = True
        outputs = ("logits",)

        def forward(self, step):
            return (step.student_output - step.teacher_output).abs().sum(-1).mean()

Then `terms={"logit_l1": 0.5}` in a Distiller, or `terms: {logit_l1: {weight: 0.5}}` in a run config
(the module listed in `imports`), with no edit inside gankd.
"""

from __future__ import annotations

import inspect
import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from torch import Tensor, nn

from gankd.registry import Registry
from gankd.tasks import Task

# Names a step's results and logs use beside the terms': a term may not take them.
RESERVED_NAMES = ("total", "loss", "d_loss", "lr", "step", "seconds")


@dataclass
class StepTensors:
    """What the loss terms read in one step."""

    student_output: Tensor  # with its graph
    teacher_output: Tensor | None  # computed without gradients; None when no term needs the teacher
    target: Tensor | None  # the batch's target images or labels, when it has them
    condition: Tensor | None  # what a conditional discriminator sees beside the images
    student_features: Mapping[str, Tensor] = field(default_factory=dict)  # tapped maps by module path
    teacher_features: Mapping[str, Tensor] = field(default_factory=dict)
    discriminate: Callable[[Tensor], Tensor] | None = None  # discriminator logits on images of this batch


@dataclass
class TermContext:
    """What a term may need once, before the first step (see LossTerm.setup)."""

    student: nn.Module
    teacher: nn.Module | None
    device: Any
    pair_channels: Callable[[tuple[tuple[str, str], ...]], list[tuple[int, int]]]  # (student, teacher) channels
    # (student, teacher) feature shapes on the Distiller's example batch, or None when it was given none
    pair_shapes: Callable[[tuple[tuple[str, str], ...]], list[tuple[tuple[int, ...], tuple[int, ...]]] | None]


class LossTerm(nn.Module):
    """One loss term of a distillation (or teacher, or scratch) objective; subclass and register it.

    Class attributes:
        needs_teacher: reads `step.teacher_output` or the teacher's features.
        reads_output: reads `step.student_output` (False for terms on tapped features alone; then data
            parallelism lets student layers after the last tap go without gradients).
        needs_target: reads `step.target` (the batch's targets or labels).
        skips_unlabelled: with needs_target, gives items whose label is NO_LABEL (hidden by
            config.data.keep_unlabelled) no loss; runs that hide labels refuse label terms without it.
        needs_discriminator: reads `step.discriminate`, and trains the discriminator with
            `discriminator_loss`.
        outputs: the task outputs it can compare ("image", "logits"); see gankd.tasks.Task.output.

    Parameters a term owns (the 1x1 adapters of "adapted") train with the student.
    """

    name: ClassVar[str] = ""
    needs_teacher: ClassVar[bool] = False
    reads_output: ClassVar[bool] = True
    needs_target: ClassVar[bool] = False
    skips_unlabelled: ClassVar[bool] = False
    needs_discriminator: ClassVar[bool] = False
    outputs: ClassVar[tuple[str, ...]] = ("image", "logits")

    def __init__(self, weight: float = 1.0):
        super().__init__()
        self.weight = check_weight(self.name or type(self).__name__, weight)

    @property
    def feature_pairs(self) -> tuple[tuple[str, str], ...]:
        """The (student module path, teacher module path) pairs whose outputs this term reads."""
        return ()

    def setup(self, context: TermContext) -> None:
        """Called once by the Distiller before the first step (build adapters, load networks)."""

    def forward(self, step: StepTensors) -> Tensor:
        raise NotImplementedError

    def discriminator_loss(self, real_logits: Tensor, fake_logits: Tensor) -> Tensor:
        """The discriminator's loss, for terms with `needs_discriminator`."""
        raise NotImplementedError(f"loss term {self.name!r} does not train a discriminator")

    def extra_repr(self) -> str:
        return f"weight={self.weight}"


_TERMS = Registry("loss term", base=LossTerm)


def register_term(name: str):
    """Class decorator adding a LossTerm subclass to the registry under `name` (and setting its `name`)."""
    if name in RESERVED_NAMES:
        raise ValueError(f"{name!r} names a logged scalar, not a loss term: choose another name")
    return _TERMS.register(name)


def term_names(output: str | None = None) -> list[str]:
    """The registered term names, sorted; with `output` ("image", "logits"), those that compare it."""
    return [name for name in _TERMS.names() if output is None or output in _TERMS.get(name).outputs]


def term_class(name: str) -> type[LossTerm]:
    return _TERMS.get(name)


def check_weight(name: str, weight: object) -> float:
    if isinstance(weight, bool) or not isinstance(weight, numbers.Real):
        raise TypeError(f"weight of {name!r} must be a number, got {type(weight).__name__} {weight!r}")
    if not math.isfinite(weight) or weight < 0:
        raise ValueError(f"weight of {name!r} must be a finite number >= 0, got {weight}")
    return float(weight)


def term_options(name: str, spec: object) -> dict[str, Any]:
    """A term's spec (a weight, or a mapping of weight and options) as constructor keyword arguments."""
    if isinstance(spec, Mapping):
        options = dict(spec)
        if "impl" in options:
            raise ValueError(f"term {name!r}: impl is set once for all terms (Distiller impl=, config impl:)")
        return options
    return {"weight": spec}


def build_term(name: str, spec: object, *, task: Task, impl: str) -> LossTerm:
    """The term `name` built from `spec` for `task`.

    Unknown names and terms the task cannot feed raise ValueError listing the valid terms; options the term
    does not take raise TypeError listing the ones it does.
    """
    if name not in _TERMS:
        raise ValueError(f"unknown loss term {name!r}; valid terms for {task.output} outputs: "
                         f"{', '.join(term_names(task.output))}")  # fmt: skip
    cls = _TERMS.get(name)
    check_task(cls, name, task)
    options = term_options(name, spec)
    _TERMS.check_options(name, hidden=("impl",), **options)
    if "impl" in inspect.signature(cls).parameters:
        options["impl"] = impl
    return cls(**options)


def check_task(term: type[LossTerm] | LossTerm, name: str, task: Task) -> None:
    """ValueError when `task`'s batches cannot feed `term`: the models' output kind, or targets it needs."""
    if name in RESERVED_NAMES:
        raise ValueError(f"{name!r} names a logged scalar, not a loss term: rename the term")
    if task.output not in term.outputs:
        raise ValueError(f"loss term {name!r} compares {' or '.join(term.outputs)}, but this task's models output "
                         f"{task.output}; valid terms: {', '.join(term_names(task.output))}")  # fmt: skip
    if term.needs_target and not task.has_targets:
        raise ValueError(f"loss term {name!r} needs the batch's targets, and task {task.name!r} batches have none")


def build_terms(specs: Mapping[str, object], *, task: Task, impl: str) -> nn.ModuleDict:
    """The positively weighted terms of `specs` ({name: weight, {weight, options} or a LossTerm}) for `task`,
    in the given order. Terms with weight 0 are left out; a mapping that weights no term raises ValueError.
    """
    if not isinstance(specs, Mapping):
        raise TypeError(f"terms must be a dict of term name -> weight or {{weight: ..., options}}, got "
                        f"{type(specs).__name__}")  # fmt: skip
    terms = nn.ModuleDict()
    for name, spec in specs.items():
        if isinstance(spec, LossTerm):  # a term object built by the caller
            check_task(spec, name, task)
            term = spec
        else:
            term = build_term(name, spec, task=task, impl=impl)
        if term.weight > 0:
            terms[name] = term
    if not terms:
        raise ValueError(f"terms select no loss term: give at least one of {', '.join(term_names(task.output))} a "
                         "weight > 0")  # fmt: skip
    return terms
