"""The objective of a run built from its config: student, frozen teacher, discriminator and loss terms,
as one gankd.distill.Distiller (the same class a user drives in their own loop)."""

from __future__ import annotations

import torch
from torch import nn

from gankd import tasks
from gankd.config import RunConfig
from gankd.distill import Distiller
from gankd.distill.terms import build_terms

from .builders import build_model
from .distributed import Distributed


def build_objective(config: RunConfig, dist: Distributed, teacher_state: dict | None = None) -> Distiller:
    """The Distiller of a run on `dist.device`; `teacher_state` (a distill run's teacher, see
    loop.teacher_state) gives the teacher's architecture, weights and discriminator."""
    torch.manual_seed(config.seed)  # every process builds the same initial weights
    task = tasks.build(config.task)
    terms = build_terms(config.terms, task=task, impl=config.impl)
    student = build_model(config.model)
    adversarial = any(term.needs_discriminator for term in terms.values())
    discriminator = build_model(config.gan.discriminator) if adversarial else None
    teacher = None
    if teacher_state is not None:
        teacher = build_model(teacher_state["model_config"])
        teacher.load_state_dict(teacher_state["weights"])
        if discriminator is not None and config.distill.discriminator_from_teacher:
            if teacher_state.get("discriminator") is None:
                raise ValueError("config.distill.discriminator_from_teacher is true but the teacher run has no "
                                 "discriminator: set it to false or distil from a GAN teacher")  # fmt: skip
            discriminator.load_state_dict(teacher_state["discriminator"])
    if config.sync_batchnorm and dist.enabled:
        student, discriminator = (synchronized(module, dist) for module in (student, discriminator))
    distiller = Distiller(teacher, student.to(dist.device), task=task, terms=dict(terms),
                          discriminator=None if discriminator is None else discriminator.to(dist.device),
                          conditional_discriminator=config.gan.conditional, impl=config.impl)  # fmt: skip
    return distiller.to(dist.device)


def synchronized(module: nn.Module | None, dist: Distributed) -> nn.Module | None:
    """`module` with its batch norm layers as torch's SyncBatchNorm (statistics over all processes)."""
    if module is None:
        return None
    if dist.device.type != "cuda":
        raise ValueError("config.sync_batchnorm needs CUDA devices (torch's SyncBatchNorm runs on GPUs only); "
                         "set it to false on CPUs")  # fmt: skip
    return nn.SyncBatchNorm.convert_sync_batchnorm(module)
