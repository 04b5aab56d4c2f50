"""The adversarial term: the student's side of a GAN loss, and the discriminator's side for its phase."""

from __future__ import annotations

from torch import Tensor

from gankd.losses import GANLoss

from .base import LossTerm, StepTensors, register_term


@register_term("adversarial")
class AdversarialTerm(LossTerm):
    """GANLoss(loss).generator(D(student output)) — "nonsaturating", "hinge" or "lsgan" (gankd.losses.GANLoss).

    The one place the GAN objective is chosen: the discriminator's phase (Distiller.discriminator_loss)
    uses the same loss. A conditional discriminator also sees the batch's condition (see gankd.tasks).
    """

    needs_discriminator = True
    outputs = ("image",)

    def __init__(self, weight: float = 1.0, *, loss: str = "nonsaturating"):
        super().__init__(weight)
        self.gan_loss = GANLoss(loss)

    def forward(self, step: StepTensors) -> Tensor:
        return self.gan_loss.generator(step.discriminate(step.student_output))

    def discriminator_loss(self, real_logits: Tensor, fake_logits: Tensor) -> Tensor:
        return self.gan_loss.discriminator(real_logits, fake_logits)

    def extra_repr(self) -> str:
        return f"weight={self.weight}, loss={self.gan_loss.mode!r}"
