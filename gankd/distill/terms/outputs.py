"""Terms on the student's output images: to the teacher's output, to the ground truth, LPIPS to the teacher."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from gankd.distill.shapes import check_same_shape
from gankd.losses import FeatureMatchLoss
from gankd.losses.perceptual import LPIPSLoss
from gankd.options import check_choice

from .base import LossTerm, StepTensors, TermContext, register_term

OUTPUT_KINDS = ("l1", "mse")
# The ground truth may also be fitted as the metric scores it: "psnr" (see GroundTruthTerm).
GROUND_TRUTH_KINDS = (*OUTPUT_KINDS, "psnr")
# Added to each image's mean squared error in the "psnr" kind, so an exact image gives a finite loss: in
# [-1, 1] units, about twice the error of rounding to 8 bits ((2 / 255)² / 12 ≈ 5e-6), i.e. 56 dB.
PSNR_LOSS_FLOOR = 1e-5


@register_term("output")
class OutputTerm(LossTerm):
    """Mean |s − t| ("l1") or (s − t)² ("mse") between the student's and the teacher's output images
    (feature_match on the whole image; GAN Compression's reconstruction loss on unpaired data)."""

    needs_teacher = True
    outputs = ("image",)

    def __init__(self, weight: float = 1.0, *, kind: str = "l1", impl: str = "auto"):
        super().__init__(weight)
        self.loss = FeatureMatchLoss(check_choice("kind", kind, OUTPUT_KINDS), impl=impl)

    def forward(self, step: StepTensors) -> Tensor:
        check_same_shape("output", "student output", step.student_output, "teacher output", step.teacher_output)
        return self.loss(step.student_output, step.teacher_output)


@register_term("ground_truth")
class GroundTruthTerm(LossTerm):
    """Mean |s − y| ("l1") or (s − y)² ("mse") between the student's output and the batch's target images, or
    ("psnr") the mean over images of 10·log10(MSE_i + PSNR_LOSS_FLOOR): the negated mean per-image PSNR, up to
    a constant, which is what the psnr metric averages. Against l1 or mse it weighs each image's error by
    the inverse of its MSE, so near-flat images, whose PSNR a small error costs most, are not spoiled for
    textured ones."""

    needs_target = True
    outputs = ("image",)

    def __init__(self, weight: float = 1.0, *, kind: str = "l1"):
        super().__init__(weight)
        self.kind = check_choice("kind", kind, GROUND_TRUTH_KINDS)

    def forward(self, step: StepTensors) -> Tensor:
        check_same_shape("ground_truth", "student output", step.student_output, "targets", step.target)
        if self.kind == "psnr":
            errors = (step.student_output.float() - step.target.float()).square().flatten(1).mean(1)
            return 10 * torch.log10(errors + PSNR_LOSS_FLOOR).mean()
        loss = F.l1_loss if self.kind == "l1" else F.mse_loss
        return loss(step.student_output.float(), step.target.float())


@register_term("lpips")
class LPIPSTerm(LossTerm):
    """Mean LPIPS between the student's and the teacher's output images ([-1, 1]); the network ("alex" or
    "vgg") loads from a verified local file (`weights_path`, else $GANKD_LPIPS_BACKBONE, else the torch hub
    cache) when the Distiller is built — missing weights fail then, not at the first step."""

    needs_teacher = True
    outputs = ("image",)

    def __init__(self, weight: float = 1.0, *, net: str = "alex", weights_path: str | Path | None = None):
        super().__init__(weight)
        self.net, self.weights_path = net, weights_path
        self.loss: LPIPSLoss | None = None

    def setup(self, context: TermContext) -> None:
        self.loss = LPIPSLoss(self.net, self.weights_path, device=context.device)

    def forward(self, step: StepTensors) -> Tensor:
        return self.loss(step.student_output, step.teacher_output)
