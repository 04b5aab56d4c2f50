"""Distiller: a frozen teacher, a trainable student, taps on both, and the named loss terms between them."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gankd.distill.adapters import adapter_device, declared_channels, make_adapter_loss
from gankd.distill.perceptual import LPIPSLoss
from gankd.distill.shapes import PairShapes, check_same_shape
from gankd.distill.taps import FeatureTaps
from gankd.distill.terms import (
    BATCH_FIELDS,
    BATCH_FORMATS,
    FEATURE_TERMS,
    TASKS,
    TEACHER_TERMS,
    DistillTerms,
    check_feature_pairs,
    check_weights,
)
from gankd.kernels.feature_match import KINDS as FEATURE_KINDS
from gankd.losses import AttentionTransferLoss, FeatureMatchLoss, GANLoss, KDLoss
from gankd.options import check_bool, check_choice

OUTPUT_KINDS = ("l1", "mse")


class Distiller(nn.Module):
    """Distils a frozen `teacher` into a trainable `student` with named, weighted loss terms.

    `terms = distiller(batch)` runs the student (with gradients) and, when a weighted term needs it, the
    teacher (under torch.no_grad), and returns a DistillTerms: each weighted term's unweighted float32
    scalar and "total", their weighted sum, to backpropagate. Terms whose weight is 0 or absent are not
    computed. Batches: "generator" (noise, labels) with labels None when unconditional; "image2image"
    (inputs, targets); "classifier" (images, labels).

    Terms (feature terms are summed over the `feature_pairs`, in their order):
        output        feature_match(student output, teacher output, kind=output_kind) ("l1" or "mse", mean)
        ground_truth  image2image: mean |student output - targets|
        feature       feature_match(student map, teacher map, kind=feature_kind) per pair; shapes must match
        adapted       per pair: a learned 1×1 adapter maps student channels to the teacher's, then mean
                      squared error; the adapters train with the student (see `student_parameters`)
        attention     attention_transfer(student map, teacher map, p=attention_p) per pair; channels may differ
        lpips         mean LPIPS between student and teacher outputs (images in [-1, 1])
        adversarial   GANLoss(adversarial).generator(discriminator(student output))
        kd            classifier: softmax_kl(student logits, teacher logits, temperature) (forward KL, T²-scaled)
        ce            classifier: cross-entropy of the student logits with the labels

    The teacher is put in eval mode with requires_grad False and stays so (also through `train()`); it is
    not a submodule, so `state_dict()` holds `student.*`, `adapters.<i>.weight/bias` (one per feature pair,
    in order, when "adapted" is weighted) and `discriminator.*` (when given), never the teacher's weights;
    `.to()`/`.cuda()` move the teacher too. Forward hooks are registered on the tapped modules only while
    a forward runs. NaN terms are returned as they are.

    Args:
        teacher, student: the models; gankd zoo models or any nn.Module (DDP-wrapped or compiled ones are
            tapped through to the module they wrap).
        task: "generator" (noise[, labels] -> image), "image2image" (input -> image) or "classifier".
        feature_pairs: {student module path: teacher module path}, e.g. {"blocks.1": "blocks.1"}; needed
            by the feature terms. Paths are checked at once; an unknown one lists the closest paths.
        weights: {term name: weight >= 0}.
        output_kind: "l1" or "mse" for the "output" term.
        feature_kind: "mse", "l1", "smooth_l1" or "cosine" for the "feature" term.
        attention_p: the power of the "attention" term's maps.
        temperature: the "kd" term's temperature.
        adversarial: "nonsaturating", "hinge" or "lsgan" (see gankd.losses.GANLoss).
        discriminator: the discriminator, needed when "adversarial" is weighted; it is trained by the caller
            with `discriminator_loss`.
        lpips_net, lpips_weights: the LPIPS backbone ("alex" or "vgg") and its local weights file
            (else $GANKD_LPIPS_BACKBONE or the torch hub cache); missing weights raise at construction.
        impl: "auto", "triton" or "reference", passed to the fused kernels.
        conditional_discriminator: the discriminator also sees the condition: the labels as its second
            argument ("generator" task; a projection discriminator) or the input images concatenated
            before the image along channels ("image2image"; pix2pix).
        example_batch: a batch to run once at construction (no gradients, eval mode) to read the tapped
            channel counts for the adapters; without it they are read from the tapped modules' layers
            (see gankd.distill.adapters.declared_channels).
    """

    def __init__(
        self,
        teacher: nn.Module,
        student: nn.Module,
        *,
        task: str,
        feature_pairs: dict[str, str] | None = None,
        weights: dict[str, float],
        output_kind: str = "l1",
        feature_kind: str = "mse",
        attention_p: float = 2.0,
        temperature: float = 4.0,
        adversarial: str = "nonsaturating",
        discriminator: nn.Module | None = None,
        lpips_net: str = "alex",
        lpips_weights: str | Path | None = None,
        impl: str = "auto",
        conditional_discriminator: bool = False,
        example_batch: Any = None,
    ):
        super().__init__()
        for role, model in (("teacher", teacher), ("student", student), ("discriminator", discriminator)):
            if not isinstance(model, nn.Module) and not (role == "discriminator" and model is None):
                raise TypeError(f"{role} must be a torch.nn.Module, got {type(model).__name__}")
        if teacher is student:
            raise ValueError("teacher and student are the same module; the teacher is frozen, so pass a separate copy")
        self.task = check_choice("task", task, TASKS)
        self.weights = check_weights(weights, task)
        # The loss modules check their options now, whichever terms are weighted; they hold no state.
        self.output_loss = FeatureMatchLoss(check_choice("output_kind", output_kind, OUTPUT_KINDS), impl=impl)
        self.feature_loss = FeatureMatchLoss(check_choice("feature_kind", feature_kind, FEATURE_KINDS), impl=impl)
        try:
            self.attention_loss = AttentionTransferLoss(attention_p, impl=impl)
        except ValueError as error:
            raise ValueError(f"attention_p: {error}") from None
        self.kd_loss = KDLoss(temperature, impl=impl)
        self.gan_loss = GANLoss(adversarial)
        if "adversarial" in self.weights and discriminator is None:
            raise ValueError("the 'adversarial' term needs a discriminator: pass discriminator=<nn.Module>")
        self.conditional_discriminator = check_bool("conditional_discriminator", conditional_discriminator)
        if conditional_discriminator and discriminator is None:
            raise ValueError("conditional_discriminator=True needs a discriminator")

        self.feature_pairs = check_feature_pairs(feature_pairs)
        feature_terms = [name for name in FEATURE_TERMS if name in self.weights]
        if feature_terms and not self.feature_pairs:
            raise ValueError(
                f"the {' and '.join(map(repr, feature_terms))} term{'s need' if len(feature_terms) > 1 else ' needs'} "
                "feature_pairs={student module path: "
                "teacher module path}; gankd.models.feature_layers(model) lists a zoo model's natural taps"
            )
        # The taps check every path now, even when no feature term is weighted (a typo is caught anyway).
        self._student_taps = FeatureTaps(_wrapped(student), [pair[0] for pair in self.feature_pairs], role="student")
        self._teacher_taps = FeatureTaps(_wrapped(teacher), [pair[1] for pair in self.feature_pairs], role="teacher")
        self._tapping = bool(feature_terms)

        teacher.eval().requires_grad_(False)
        object.__setattr__(self, "teacher", teacher)  # not a submodule: out of state_dict() and parameters()
        self.student = student
        self.discriminator = discriminator
        self.last_student_output: Tensor | None = None
        self.last_condition: Tensor | None = None

        self.adapters = nn.ModuleList()
        if "adapted" in self.weights:
            for student_channels, teacher_channels in self._pair_channels(example_batch):
                adapter = make_adapter_loss(student_channels, teacher_channels, impl=impl)
                self.adapters.append(adapter.to(adapter_device(student)))
        self.lpips = None
        if "lpips" in self.weights:
            self.lpips = LPIPSLoss(lpips_net, lpips_weights, device=adapter_device(student))

    # ----------------------------------------------------------------------------------------------------
    # The step

    def forward(self, batch: Any) -> DistillTerms:
        """The weighted terms for one batch (see the class docstring for the batch formats)."""
        first, second = self._unpack(batch)
        student_output, teacher_output = self._run_models(first, second)
        condition = second if self.task == "generator" else first
        self.last_student_output = student_output.detach()
        self.last_condition = None if condition is None else condition.detach()
        try:
            terms = self._terms(student_output, teacher_output, second, condition)
        finally:
            self._student_taps.clear()
            self._teacher_taps.clear()
        terms["total"] = sum(self.weights[name] * value for name, value in terms.items())
        return DistillTerms(terms)

    def _unpack(self, batch: Any) -> tuple[Tensor, Tensor | None]:
        if not isinstance(batch, (tuple, list)) or len(batch) != 2:
            raise TypeError(f"a {self.task!r} batch is a pair {BATCH_FORMATS[self.task]}; got {_describe(batch)}")
        first, second = batch
        names = BATCH_FIELDS[self.task]
        if not isinstance(first, Tensor):
            raise TypeError(f"{names[0]} must be a tensor, got {_describe(first)}")
        if second is not None and not isinstance(second, Tensor):
            raise TypeError(f"{names[1]} must be a tensor or None, got {_describe(second)}")
        needs_second = {"image2image": "ground_truth", "classifier": "ce"}.get(self.task)
        if second is None and needs_second in self.weights:
            raise ValueError(f"the {needs_second!r} term needs {names[1]}; the batch has None")
        return first, second

    def _run_models(self, first: Tensor, second: Tensor | None) -> tuple[Tensor, Tensor | None]:
        # Generators take (noise, labels) when conditional; the others take the first element alone.
        arguments = (first,) if self.task != "generator" or second is None else (first, second)
        run_teacher = any(name in self.weights for name in TEACHER_TERMS)
        taps = (self._student_taps, self._teacher_taps) if self._tapping else ()
        with contextlib.ExitStack() as attached:
            for tap in taps:
                attached.enter_context(tap)
            student_output = _output("student", self.student(*arguments))
            teacher_output = None
            if run_teacher:
                with torch.no_grad():
                    teacher_output = _output("teacher", self.teacher(*arguments))
        return student_output, teacher_output

    def _terms(
        self, student_output: Tensor, teacher_output: Tensor | None, second: Tensor | None, condition: Tensor | None
    ) -> dict[str, Tensor]:
        weighted, terms = self.weights, {}
        if "output" in weighted:
            check_same_shape("output", "student output", student_output, "teacher output", teacher_output)
            terms["output"] = self.output_loss(student_output, teacher_output)
        if "ground_truth" in weighted:
            check_same_shape("ground_truth", "student output", student_output, "targets", second)
            terms["ground_truth"] = F.l1_loss(student_output.float(), second.float())
        if self._tapping:
            terms.update(self._feature_terms())
        if "lpips" in weighted:
            terms["lpips"] = self.lpips(student_output, teacher_output)
        if "adversarial" in weighted:
            terms["adversarial"] = self.gan_loss.generator(self._discriminate(student_output, condition))
        if "kd" in weighted:
            check_same_shape("kd", "student logits", student_output, "teacher logits", teacher_output)
            terms["kd"] = self.kd_loss(student_output, teacher_output)
        if "ce" in weighted:
            terms["ce"] = F.cross_entropy(student_output.float(), second)
        return {name: value.float() for name, value in terms.items()}

    def _feature_terms(self) -> dict[str, Tensor]:
        sums: dict[str, Tensor] = {}

        def add(name: str, value: Tensor) -> None:
            sums[name] = value if name not in sums else sums[name] + value

        for index, (student_path, teacher_path) in enumerate(self.feature_pairs):
            student_map, teacher_map = self._student_taps[student_path], self._teacher_taps[teacher_path]
            pair = PairShapes(student_path, student_map, teacher_path, teacher_map)
            if "feature" in self.weights:
                pair.check_same_shape()
                add("feature", self.feature_loss(student_map, teacher_map))
            if "adapted" in self.weights:
                adapter = self.adapters[index]
                pair.check_adapter(adapter.student_channels, adapter.teacher_channels)
                add("adapted", adapter(student_map, teacher_map))
            if "attention" in self.weights:
                pair.check_positions("attention")
                add("attention", self.attention_loss(student_map, teacher_map))
        return sums

    # ----------------------------------------------------------------------------------------------------
    # The discriminator's side

    def discriminator_loss(
        self, real: Tensor, fake: Tensor, *, real_condition: Tensor | None = None, fake_condition: Tensor | None = None
    ) -> Tensor:
        """The discriminator's float32 loss on `real` and `fake` images under the Distiller's GAN loss.

        `fake` is detached here (typically `last_student_output`). With `conditional_discriminator`, pass
        each batch's condition: labels ("generator") or input images ("image2image"); `last_condition`
        holds the latest forward's.
        """
        if self.discriminator is None:
            raise ValueError("discriminator_loss needs a discriminator: pass discriminator= to the Distiller")
        real_logits = self._discriminate(real, real_condition, "real_condition")
        fake_logits = self._discriminate(fake.detach(), fake_condition, "fake_condition")
        return self.gan_loss.discriminator(real_logits, fake_logits)

    def _discriminate(self, images: Tensor, condition: Tensor | None, name: str = "the batch's condition") -> Tensor:
        if not self.conditional_discriminator:
            return self.discriminator(images)
        if condition is None:
            raise ValueError(f"conditional_discriminator=True: {name} is needed (labels or input images), got None")
        if self.task == "generator":
            return self.discriminator(images, condition)
        if condition.shape[0] != images.shape[0] or condition.shape[2:] != images.shape[2:]:
            raise ValueError(
                f"a conditional image2image discriminator sees inputs and images concatenated along channels: "
                f"they need equal batch and spatial sizes, got {tuple(condition.shape)} and {tuple(images.shape)}"
            )
        return self.discriminator(torch.cat([condition.to(images.dtype), images], dim=1))

    # ----------------------------------------------------------------------------------------------------
    # Parameters, modes, devices

    def student_parameters(self) -> Iterator[nn.Parameter]:
        """What the student's optimizer trains: the student's parameters, then the adapters'."""
        yield from self.student.parameters()
        yield from self.adapters.parameters()

    def train(self, mode: bool = True) -> Distiller:
        super().train(mode)
        self.teacher.eval()  # the teacher is frozen in eval mode whatever the distiller's mode
        return self

    def _apply(self, fn, recurse=True):
        # The teacher is not a submodule, yet it follows the distiller's .to(), .cuda(), .half() ...
        self.teacher._apply(fn)
        return super()._apply(fn, recurse)

    def _pair_channels(self, example_batch: Any) -> list[tuple[int, int]]:
        """(student channels, teacher channels) of each feature pair, for the adapters."""
        if example_batch is not None:
            was_training = self.student.training
            self.student.eval()
            try:
                with torch.no_grad():
                    self._run_models(*self._unpack(example_batch))
                return [
                    (self._student_taps[student_path].shape[1], self._teacher_taps[teacher_path].shape[1])
                    for student_path, teacher_path in self.feature_pairs
                ]
            finally:
                self.student.train(was_training)
                self._student_taps.clear()
                self._teacher_taps.clear()
        channels = []
        for student_path, teacher_path in self.feature_pairs:
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
        return f"task={self.task!r}, weights={self.weights}, feature_pairs={dict(self.feature_pairs)}"


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


def _describe(value: object) -> str:
    return f"tensor of shape {tuple(value.shape)}" if isinstance(value, Tensor) else type(value).__name__
