"""The objective of a run built from its config: student, frozen teacher, discriminator and loss terms,
as one gankd.distill.Distiller (the same class a user drives in their own loop)."""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from gankd import models, tasks
from gankd.config import RunConfig
from gankd.distill import Distiller
from gankd.distill.terms import build_terms

from .builders import build_model
from .distributed import Distributed
from .teacher import Teacher

# How a distilled student starts: its own random initialisation, or the teacher pruned to its widths.
STUDENT_INITS = ("random", "teacher")


def build_objective(config: RunConfig, dist: Distributed, teacher: Teacher | None = None,
                    example_items: tuple | None = None) -> Distiller:  # fmt: skip
    """The Distiller of a run on `dist.device`; `teacher` (a distill run's, see gankd.train.teacher) gives
    the frozen teacher, the discriminator's warm start and, with distill.student_init "teacher", the
    student's initial weights. `example_items` (a collated batch of the run's training data) are what the
    pruned teacher's layers are recalibrated on (see gankd.models.init_from_teacher); without them, the
    model's example inputs."""
    torch.manual_seed(config.seed)  # every process builds the same initial weights
    task = tasks.build(config.task)
    terms = build_terms(config.terms, task=task, impl=config.impl)
    student = build_model(config.model)
    adversarial = any(term.needs_discriminator for term in terms.values())
    discriminator = build_model(config.gan.discriminator) if adversarial else None
    if teacher is not None:
        if config.distill.student_init == "teacher":
            try:
                models.init_from_teacher(student, teacher.model, _example_inputs(task, teacher.model, example_items))
            except ValueError as error:
                raise ValueError(f"config.distill.student_init is 'teacher': {error}") from None
        if discriminator is not None and config.distill.discriminator_from_teacher:
            if teacher.load_discriminator is None:
                raise ValueError("config.distill.discriminator_from_teacher is true but the teacher has no "
                                 "discriminator (a gankd GAN run's, or distill.teacher.discriminator_weights): "
                                 "set it to false, or give the teacher's discriminator")  # fmt: skip
            teacher.load_discriminator(discriminator)
    if config.sync_batchnorm and dist.enabled:
        student, discriminator = (synchronized(module, dist) for module in (student, discriminator))
    distiller = Distiller(None if teacher is None else teacher.model, student.to(dist.device), task=task,
                          terms=dict(terms),
                          discriminator=None if discriminator is None else discriminator.to(dist.device),
                          conditional_discriminator=config.gan.conditional, impl=config.impl,
                          teacher_mode=config.distill.teacher_mode)  # fmt: skip
    return distiller.to(dist.device)


def _example_inputs(task, model: nn.Module, items: tuple | None) -> tuple | None:
    """The model inputs a batch of data items gives (noise drawn for a generator), or None without items."""
    if items is None:
        return None
    generator = torch.Generator().manual_seed(0)

    def draw_noise(dims: int) -> torch.Tensor:
        return torch.randn(len(items[0]), dims, generator=generator)

    return task.split(*task.from_data(items, model, draw_noise)).inputs


def sized_student(config: RunConfig, teacher: Teacher | None) -> RunConfig:
    """`config` with the student's width chosen for distill.student_macs (the widest whose MACs are at most
    that share of the teacher's) written into model.options; `config` itself when student_macs is 0."""
    fraction = config.distill.student_macs
    if not fraction or teacher is None:
        return config
    option = models.width_option(config.model.name)
    try:
        width = models.width_for_macs(config.model.name, config.model.options, teacher.model, fraction)
    except ValueError as error:
        raise ValueError(f"config.distill.student_macs is {fraction}: {error}") from None
    model = dataclasses.replace(config.model, options={**config.model.options, option: width})
    return dataclasses.replace(config, model=model)


def synchronized(module: nn.Module | None, dist: Distributed) -> nn.Module | None:
    """`module` with its batch norm layers as torch's SyncBatchNorm (statistics over all processes)."""
    if module is None:
        return None
    if dist.device.type != "cuda":
        raise ValueError("config.sync_batchnorm needs CUDA devices (torch's SyncBatchNorm runs on GPUs only); "
                         "set it to false on CPUs")  # fmt: skip
    return nn.SyncBatchNorm.convert_sync_batchnorm(module)
