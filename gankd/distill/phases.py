"""A Distiller's two phases as modules, so each trained side can be wrapped in DistributedDataParallel.

DDP reduces the gradients of one module's parameters during its backward. A step trains two sides in
turn — the student with the terms' adapters, then the discriminator — so each side is its own module
whose forward is that phase. They share their submodules with the Distiller (no copies) and are not
part of its state_dict.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from gankd.distill.distiller import Distiller, DistillTerms


class StudentPhase(nn.Module):
    """Parameters: the student's and the terms' (adapters). `forward(batch)` is `distiller(batch)`."""

    def __init__(self, distiller: Distiller):
        super().__init__()
        self.student = distiller.student
        self.terms = distiller.terms
        object.__setattr__(self, "distiller", distiller)  # not a submodule: it holds the discriminator

    def forward(self, batch: Any) -> DistillTerms:
        return self.distiller(batch)


class DiscriminatorPhase(nn.Module):
    """Parameters: the discriminator's. `forward(real, fake, ...)` is `distiller.discriminator_loss(...)`."""

    def __init__(self, distiller: Distiller):
        super().__init__()
        if distiller.discriminator is None:
            raise ValueError("the Distiller has no discriminator: there is no discriminator phase")
        self.discriminator = distiller.discriminator
        object.__setattr__(self, "distiller", distiller)

    def forward(self, real: Tensor, fake: Tensor, real_condition: Tensor | None = None,
                fake_condition: Tensor | None = None) -> Tensor:  # fmt: skip
        return self.distiller.discriminator_loss(real, fake, real_condition=real_condition,
                                                 fake_condition=fake_condition)  # fmt: skip
