"""Terms on classifier logits: Hinton KD (fused softmax-KL), cross-entropy, and logit regression."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from gankd.distill.shapes import check_same_shape
from gankd.losses import KDLoss
from gankd.options import check_choice

from .base import LossTerm, StepTensors, register_term

LOGIT_SPACES = ("logits", "probabilities")
# The label of an item whose label is hidden (config.data.keep_unlabelled): torch's cross-entropy ignore_index.
NO_LABEL = -100


@register_term("kd")
class KDTerm(LossTerm):
    """softmax_kl(student logits, teacher logits, temperature): T²-scaled forward KL (Hinton et al.), or
    `direction` "reverse" / "jsd" (with `beta`), averaged over the batch (gankd.kernels.softmax_kl)."""

    needs_teacher = True
    outputs = ("logits",)

    def __init__(self, weight: float = 1.0, *, temperature: float = 4.0, direction: str = "forward",
                 beta: float = 0.5, impl: str = "auto"):  # fmt: skip
        super().__init__(weight)
        self.loss = KDLoss(temperature, direction=direction, beta=beta, impl=impl)

    def forward(self, step: StepTensors) -> Tensor:
        check_same_shape("kd", "student logits", step.student_output, "teacher logits", step.teacher_output)
        return self.loss(step.student_output, step.teacher_output)


@register_term("ce")
class CrossEntropyTerm(LossTerm):
    """Cross-entropy of the student's logits with the batch's labels, averaged over the batch; an item whose
    label is hidden (NO_LABEL, config.data.keep_unlabelled) adds 0. A mean over all items, not over the labelled
    ones: micro-batches and processes then add up to the mean of the whole step, however they split it."""

    needs_target = True
    skips_unlabelled = True
    outputs = ("logits",)

    def __init__(self, weight: float = 1.0, *, label_smoothing: float = 0.0):
        super().__init__(weight)
        if isinstance(label_smoothing, bool) or not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing!r}")
        self.label_smoothing = float(label_smoothing)

    def forward(self, step: StepTensors) -> Tensor:
        total = F.cross_entropy(step.student_output.float(), step.target, ignore_index=NO_LABEL, reduction="sum",
                                label_smoothing=self.label_smoothing)  # fmt: skip
        return total / step.target.shape[0]


@register_term("logit_mse")
class LogitMSETerm(LossTerm):
    """‖y_teacher − y_student‖² per sample, summed over the classes and averaged over the batch: regression
    on the teacher's logits (Buciluǎ et al. 2006; Ba & Caruana 2014), or on its softmax probabilities with
    `space="probabilities"`. With the optimizer's L2 weight decay this is the classic model-compression
    objective."""

    needs_teacher = True
    outputs = ("logits",)

    def __init__(self, weight: float = 1.0, *, space: str = "logits"):
        super().__init__(weight)
        self.space = check_choice("space", space, LOGIT_SPACES)

    def forward(self, step: StepTensors) -> Tensor:
        check_same_shape("logit_mse", "student logits", step.student_output, "teacher logits", step.teacher_output)
        student, teacher = step.student_output.float(), step.teacher_output.float()
        if self.space == "probabilities":
            student, teacher = student.softmax(-1), teacher.softmax(-1)
        return (student - teacher).square().sum(-1).mean()

    def extra_repr(self) -> str:
        return f"weight={self.weight}, space={self.space!r}"
