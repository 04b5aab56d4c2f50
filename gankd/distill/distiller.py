"""Distiller: the objective of a run — a student, an optional frozen teacher, named loss terms, and the
discriminator's phase. Teacher, scratch and distillation runs are this one objective with or without
teacher terms; gankd's trainer drives it, and it is the API for distilling inside one's own loop."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from gankd import tasks
from gankd.distill.adapters import adapter_device, declared_channels
from gankd.distill.taps import FeatureTaps
from gankd.distill.terms import StepTensors, TermContext, build_terms
from gankd.options import check_bool, check_choice
from gankd.tasks import Task, TaskBatch

TEACHER_MODES = ("eval", "train")  # the teacher's forward: running statistics, or batch statistics and dropout


class DistillTerms(dict):
    """The loss terms of one step: {term name: unweighted float32 scalar} plus "total".

    "total" is the weighted sum of the other entries: backpropagate it. The entries keep their graphs;
    `to_floats()` gives plain numbers for logging (one device-to-host copy for all of them).
    """

    @property
    def total(self) -> Tensor:
        return self["total"]

    def to_floats(self) -> dict[str, float]:
        values = torch.stack([value.detach().float() for value in self.values()]).tolist()
        return dict(zip(self.keys(), values, strict=True))


class Distiller(nn.Module):
    """A student trained on named, weighted loss terms, from a frozen `teacher` when one is given.

    `terms = distiller(batch)` runs the student (with gradients) and, when a term needs it, the teacher
    (under torch.no_grad), and returns a DistillTerms: each term's unweighted float32 scalar and "total",
    their weighted sum, to backpropagate. The batch is the task's pair: "generator" (noise, labels) with
    labels None when unconditional; "image2image" (inputs, targets); "classifier" (images, labels). The
    discriminator's phase is `discriminator_loss(real, fake, ...)`.

    Terms (`terms={name: weight}` or `{name: {"weight": w, **options}}`; gankd.distill.term_names() lists
    them, and `register_term` adds one's own):
        output        feature_match(student output, teacher output), kind "l1" | "mse"
        ground_truth  student output against the batch's targets, kind "l1" | "mse"
        feature       feature_match per tapped pair (`pairs`), kind "mse" | "l1" | "smooth_l1" | "cosine"
        adapted       per pair, a learned 1×1 adapter to the teacher's channels, then mse (kind "mse" | "l1")
        attention     attention_transfer per pair, power `p`; channels may differ
        lpips         LPIPS between student and teacher outputs (`net`, `weights_path`)
        adversarial   the student's side of a GAN loss (`loss` "nonsaturating" | "hinge" | "lsgan")
        kd            softmax_kl at `temperature` (`direction`, `beta`), T²-scaled
        ce            cross-entropy with the labels (`label_smoothing`)
        logit_mse     ‖y_teacher − y_student‖² per sample (`space` "logits" | "probabilities")
    Feature terms take `pairs={student module path: teacher module path}` and sum over them.

    The teacher is put in `teacher_mode` with requires_grad False and stays so (also through `train()`); it is
    not a submodule, so `state_dict()` holds `student.*`, the terms' parameters (`terms.adapted.adapters.<i>.*`)
    and `discriminator.*` (when given), never the teacher's weights; `.to()`/`.cuda()` move the teacher too.
    Forward hooks are registered on the tapped modules only while a forward runs. NaN terms are returned
    as they are.

    Args:
        teacher: the frozen teacher, or None for a run without one (its terms then need no teacher).
        student: the trained model. Both may be gankd zoo models or any nn.Module (DDP-wrapped or compiled
            ones are tapped through to the module they wrap).
        task: a gankd.tasks name ("generator", "image2image", "classifier") or Task object.
        terms: the loss terms with their weights and options; terms weighted 0 are left out.
        discriminator: needed by the "adversarial" term; trained by the caller with `discriminator_loss`.
        conditional_discriminator: the discriminator also sees the batch's condition (the task says what:
            labels for a projection discriminator, input images concatenated before the image for pix2pix).
        impl: "auto", "triton" or "reference", for every term that runs a fused kernel.
        teacher_mode: "eval" (the default: running statistics, no dropout) or "train": batch statistics and
            dropout on in the teacher's forward, as pix2pix's published outputs are made (its test script
            calls eval() only with --eval). The teacher stays frozen either way.
        example_batch: a batch to run once at construction (no gradients, eval mode) to read the tapped
            channel counts for the adapters; without it they are read from the tapped modules' layers
            (see gankd.distill.adapters.declared_channels).
    """

    def __init__(
        self,
        teacher: nn.Module | None,
        student: nn.Module,
        *,
        task: str | Task,
        terms: Mapping[str, Any],
        discriminator: nn.Module | None = None,
        conditional_discriminator: bool = False,
        impl: str = "auto",
        example_batch: Any = None,
        teacher_mode: str = "eval",
    ):
        super().__init__()
        for role, model in (("teacher", teacher), ("student", student), ("discriminator", discriminator)):
            if not isinstance(model, nn.Module) and not (role != "student" and model is None):
                raise TypeError(f"{role} must be a torch.nn.Module, got {type(model).__name__}")
        if teacher is student:
            raise ValueError("teacher and student are the same module; the teacher is frozen, so pass a separate copy")
        self.task = tasks.build(task)
        self.teacher_mode = check_choice("teacher_mode", teacher_mode, TEACHER_MODES)
        self.student = student
        self.terms = build_terms(terms, task=self.task, impl=impl)
        self._check_needs(teacher, discriminator, check_bool("conditional_discriminator", conditional_discriminator))
        self.conditional_discriminator = conditional_discriminator

        pairs = [pair for term in self.terms.values() for pair in term.feature_pairs]
        self.feature_pairs = tuple(dict.fromkeys(pairs))  # every tapped pair once, in order
        self._student_taps = FeatureTaps(_wrapped(student), [pair[0] for pair in self.feature_pairs], role="student")
        self._teacher_taps = None
        if teacher is not None:
            self._teacher_taps = FeatureTaps(
                _wrapped(teacher), [pair[1] for pair in self.feature_pairs], role="teacher"
            )
            teacher.train(self.teacher_mode == "train").requires_grad_(False)
        object.__setattr__(self, "teacher", teacher)  # not a submodule: out of state_dict() and parameters()
        self.discriminator = discriminator
        self._run_teacher = any(term.needs_teacher for term in self.terms.values())
        self.last_student_output: Tensor | None = None
        self.last_condition: Tensor | None = None

        self._example_shapes: dict[str, dict[str, torch.Size]] | None = None  # filled once by _tapped_shapes
        context = TermContext(student, teacher, adapter_device(student),
                              lambda pairs: self._pair_channels(pairs, example_batch),
                              lambda pairs: self._pair_shapes(pairs, example_batch))  # fmt: skip
        for term in self.terms.values():
            term.setup(context)

    def _check_needs(self, teacher: nn.Module | None, discriminator: nn.Module | None, conditional: bool) -> None:
        needing = [name for name, term in self.terms.items() if term.needs_teacher]
        if needing and teacher is None:
            raise ValueError(f"the {', '.join(map(repr, needing))} term{'s need' if len(needing) > 1 else ' needs'} "
                             "a teacher; pass teacher=<nn.Module> or leave such terms out")  # fmt: skip
        adversarial = [name for name, term in self.terms.items() if term.needs_discriminator]
        if len(adversarial) > 1:
            raise ValueError(f"terms {adversarial} each train a discriminator; use one")
        if adversarial and discriminator is None:
            raise ValueError(f"the {adversarial[0]!r} term needs a discriminator: pass discriminator=<nn.Module>")
        if conditional and discriminator is None:
            raise ValueError("conditional_discriminator=True needs a discriminator")
        if discriminator is not None:
            self.task.check_discriminator(discriminator, conditional)

    # ----------------------------------------------------------------------------------------------------
    # The student's phase

    def forward(self, batch: Any) -> DistillTerms:
        """The weighted terms for one batch (see the class docstring for the batch formats)."""
        try:
            return self.compute_terms(self._step_tensors(batch))
        finally:
            self._clear_taps()

    def capture(self, batch: Any) -> StepTensors:
        """What the terms read for `batch` (outputs, target, condition, tapped maps), computed without
        gradients and detached: to time or inspect the terms alone with `compute_terms`."""
        try:
            with torch.no_grad():
                step = self._step_tensors(batch)
            student_features = {path: step.student_features[path].detach() for path, _ in self.feature_pairs}
            teacher_features = {path: step.teacher_features[path].detach() for _, path in self.feature_pairs}
        finally:
            self._clear_taps()
        return dataclasses.replace(step, student_features=student_features, teacher_features=teacher_features)

    def _step_tensors(self, batch: Any) -> StepTensors:
        unpacked = self._unpack(batch)
        student_output, teacher_output = self._run_models(unpacked.inputs)
        condition = unpacked.condition
        self.last_student_output = student_output.detach()
        self.last_condition = None if condition is None else condition.detach()
        return StepTensors(student_output, teacher_output, unpacked.target, condition, self._student_taps,
                           self._teacher_taps or {}, self._judge_under(condition))  # fmt: skip

    def _clear_taps(self) -> None:
        self._student_taps.clear()
        if self._teacher_taps is not None:
            self._teacher_taps.clear()

    def compute_terms(self, step: StepTensors) -> DistillTerms:
        """Every term on `step` and their weighted "total" (what `forward` returns after running the models)."""
        terms = {name: term(step).float() for name, term in self.terms.items()}
        terms["total"] = sum(self.terms[name].weight * value for name, value in terms.items())
        return DistillTerms(terms)

    def _unpack(self, batch: Any) -> TaskBatch:
        unpacked = self.task.unpack(batch)
        if unpacked.target is None:
            needing = [name for name, term in self.terms.items() if term.needs_target]
            if needing:
                raise ValueError(f"the {needing[0]!r} term needs {self.task.batch_fields[1]}; the batch has None")
        return unpacked

    def _run_models(self, inputs: tuple[Tensor, ...]) -> tuple[Tensor, Tensor | None]:
        taps = [self._student_taps] + ([self._teacher_taps] if self._run_teacher else [])
        with contextlib.ExitStack() as attached:
            for tap in taps if self.feature_pairs else ():
                attached.enter_context(tap)
            student_output = _output("student", self.student(*inputs))
            teacher_output = None
            if self._run_teacher:
                with torch.no_grad():
                    teacher_output = _output("teacher", self.teacher(*inputs))
        return student_output, teacher_output

    # ----------------------------------------------------------------------------------------------------
    # The discriminator's phase

    def discriminator_loss(
        self, real: Tensor, fake: Tensor, *, real_condition: Tensor | None = None, fake_condition: Tensor | None = None
    ) -> Tensor:
        """The discriminator's float32 loss on `real` and `fake` images under the adversarial term's GAN loss.

        `fake` is detached here (typically `last_student_output`). With `conditional_discriminator`, pass
        each batch's condition: labels ("generator") or input images ("image2image"); `last_condition`
        holds the latest forward's. Real and fake go through separate forwards, as in the student's
        phase: a batch-norm discriminator never sees statistics of a mixed batch.
        """
        if self.discriminator is None:
            raise ValueError("discriminator_loss needs a discriminator: pass discriminator= to the Distiller")
        term = next((term for term in self.terms.values() if term.needs_discriminator), None)
        if term is None:
            raise ValueError("discriminator_loss needs an adversarial term: add terms={'adversarial': <weight>}")
        real_logits = self.judge(real, real_condition, "real_condition")
        fake_logits = self.judge(fake.detach(), fake_condition, "fake_condition")
        return term.discriminator_loss(real_logits, fake_logits).float()

    def judge(self, images: Tensor, condition: Tensor | None = None, name: str = "the batch's condition") -> Tensor:
        """The discriminator's logits on `images` (and `condition`, when it is conditional)."""
        if not self.conditional_discriminator:
            return self.discriminator(images)
        if condition is None:
            raise ValueError(f"conditional_discriminator=True: {name} is needed (labels or input images), got None")
        return self.discriminator(*self.task.discriminator_inputs(images, condition))

    def _judge_under(self, condition: Tensor | None):
        if self.discriminator is None:
            return None
        return lambda images: self.judge(images, condition)

    # ----------------------------------------------------------------------------------------------------
    # Parameters, modes, devices

    def student_parameters(self) -> Iterator[nn.Parameter]:
        """What the student's optimizer trains: the student's parameters, then the terms' (adapters)."""
        yield from self.student.parameters()
        yield from self.terms.parameters()

    def train(self, mode: bool = True) -> Distiller:
        super().train(mode)
        if self.teacher is not None:  # the teacher keeps its mode whatever the distiller's
            self.teacher.train(self.teacher_mode == "train")
        return self

    def _apply(self, fn, recurse=True):
        # The teacher is not a submodule, yet it follows the distiller's .to(), .cuda(), .half() ...
        if self.teacher is not None:
            self.teacher._apply(fn)
        return super()._apply(fn, recurse)

    def _tapped_shapes(self, example_batch: Any) -> dict[str, dict[str, torch.Size]]:
        """{"student": {path: shape}, "teacher": {path: shape}} of every tapped feature, from one forward of
        `example_batch` (run once, however many terms ask)."""
        if self._example_shapes is None:
            # Both in eval mode: a train-mode teacher's batch norms would take this batch into their statistics.
            modes = {model: model.training for model in (self.student, self.teacher) if model is not None}
            device = adapter_device(self.student)
            try:
                with torch.no_grad():
                    for model in modes:
                        model.eval()
                    inputs = self._unpack(example_batch).inputs
                    self._run_models(tuple(x.to(device) if isinstance(x, Tensor) else x for x in inputs))
                self._example_shapes = {
                    role: {path: taps[path].shape for path in dict.fromkeys(pair[side] for pair in self.feature_pairs)}
                    for role, side, taps in (("student", 0, self._student_taps), ("teacher", 1, self._teacher_taps))
                    if taps is not None
                }
            finally:
                for model, training in modes.items():
                    model.train(training)
                self._clear_taps()
        return self._example_shapes

    def _pair_shapes(self, pairs: tuple[tuple[str, str], ...],
                     example_batch: Any) -> list[tuple[torch.Size, torch.Size]] | None:  # fmt: skip
        """(student shape, teacher shape) of each pair's features on the example batch; None without one."""
        if example_batch is None:
            return None
        shapes = self._tapped_shapes(example_batch)
        return [(shapes["student"][student], shapes["teacher"][teacher]) for student, teacher in pairs]

    def _pair_channels(self, pairs: tuple[tuple[str, str], ...], example_batch: Any) -> list[tuple[int, int]]:
        """(student channels, teacher channels) of each pair, for the adapters."""
        shapes = self._pair_shapes(pairs, example_batch)
        if shapes is not None:
            return [(student[1], teacher[1]) for student, teacher in shapes]
        channels = []
        for student_path, teacher_path in pairs:
            pair = [declared_channels(_wrapped(model), path, role=role) for model, path, role in (
                (self.student, student_path, "student"), (self.teacher, teacher_path, "teacher"))]  # fmt: skip
            if None in pair:
                role, path = ("student", student_path) if pair[0] is None else ("teacher", teacher_path)
                raise ValueError(
                    f"cannot tell how many channels {role} module {path!r} outputs (no conv, norm or linear layer "
                    "in or before it): pass example_batch=<one batch> so the Distiller reads them from a forward"
                )
            channels.append(tuple(pair))
        return channels

    def extra_repr(self) -> str:
        return f"task={self.task.name!r}, teacher={'none' if self.teacher is None else type(self.teacher).__name__}"


def _wrapped(model: nn.Module) -> nn.Module:
    """The module a DDP/DataParallel wrapper or torch.compile wraps (paths are the bare model's)."""
    while True:
        inner = getattr(model, "_orig_mod", None)
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            inner = model.module
        if not isinstance(inner, nn.Module):
            return model
        model = inner


def _output(role: str, output: object) -> Tensor:
    if not isinstance(output, Tensor):
        raise TypeError(f"the {role} must return one tensor, got {type(output).__name__}")
    return output
