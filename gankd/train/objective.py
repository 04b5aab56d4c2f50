"""The objective of a run built from its config: student, frozen teacher, discriminator and loss terms,
as one gankd.distill.Distiller (the same class a user drives in their own loop)."""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from gankd import models, tasks
from gankd.config import RunConfig
from gankd.distill import Distiller
from gankd.distill.adapters import adapter_device
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
    pruned teacher's layers are recalibrated on (see gankd.models.init_from_teacher; without them, the
    model's example inputs), and two of them are run through both models to read the channels of tapped
    features that no layer declares (a tuple element, `block[0]`)."""
    torch.manual_seed(config.seed)  # every process builds the same initial weights
    task = tasks.build(config.task)
    terms = build_terms(config.terms, task=task, impl=config.impl)
    student = build_model(config.model)
    adversarial = any(term.needs_discriminator for term in terms.values())
    discriminator = build_model(config.gan.discriminator) if adversarial else None
    if teacher is not None:
        if config.distill.student_init == "teacher":
            try:
                inputs = None if example_items is None else model_inputs(task, teacher.model, example_items)
                _check_width_only(config, teacher, None if inputs is None else _first(inputs, CHANNEL_BATCH_ITEMS))
                models.init_from_teacher(student, teacher.model, inputs)
            except ValueError as error:
                raise ValueError(f"config.distill.student_init is 'teacher': {error}") from None
            except RuntimeError as error:  # the teacher's forward on the run's data
                raise ValueError(f"config.distill.student_init is 'teacher': {_misfit(config, error)}") from None
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
                          teacher_mode=config.distill.teacher_mode,
                          example_batch=_channel_batch(task, teacher, example_items))  # fmt: skip
    return distiller.to(dist.device)


# Items of the example batch the Distiller runs to read tapped channels (see build_objective).
CHANNEL_BATCH_ITEMS = 2


def _first(inputs: tuple, count: int) -> tuple:
    """The first `count` items of a batch (of data items, or a model's inputs); other values as they are."""
    return tuple(value[:count] if isinstance(value, torch.Tensor) and value.dim() else value for value in inputs)


def _channel_batch(task, teacher: Teacher | None, items: tuple | None):
    if teacher is None or items is None:
        return None
    return _example_batch(task, teacher.model, _first(items, CHANNEL_BATCH_ITEMS))


def _example_batch(task, model: nn.Module, items: tuple) -> tuple:
    """The training batch a collated batch of data items gives (seeded noise drawn for a generator)."""
    generator = torch.Generator().manual_seed(0)

    def draw_noise(dims: int) -> torch.Tensor:
        return torch.randn(len(items[0]), dims, generator=generator)

    return task.from_data(items, model, draw_noise)


def model_inputs(task, model: nn.Module, items: tuple) -> tuple:
    """The inputs of `model` that a collated batch of data items gives under `task` (seeded noise drawn for a
    generator)."""
    return task.split(*_example_batch(task, model, items)).inputs


def sized_student(config: RunConfig, teacher: Teacher | None, example_items: tuple | None = None) -> RunConfig:
    """`config` with the student's width chosen for distill.student_macs (the widest whose MACs are at most
    that share of the teacher's, both counted on one item of `example_items` when given, as the run feeds
    them) written into model.options; `config` itself when student_macs is 0."""
    fraction = config.distill.student_macs
    if not fraction or teacher is None:
        return config
    option = models.width_option(config.model.name)
    try:
        inputs = None
        if example_items is not None:
            one_item = _first(example_items, 1)
            device = adapter_device(teacher.model)  # where the teacher's MACs are counted
            inputs = tuple(value.to(device) for value in model_inputs(tasks.build(config.task), teacher.model,
                                                                        one_item))  # fmt: skip
        width = models.width_for_macs(config.model.name, config.model.options, teacher.model, fraction, inputs,
                                      student_input=dataclasses.asdict(config.model.input),
                                      prunable=config.distill.student_init == "teacher")  # fmt: skip
    except ValueError as error:
        raise ValueError(f"config.distill.student_macs is {fraction}: {error}") from None
    except RuntimeError as error:  # the teacher's (or the student's) forward on the run's data
        raise ValueError(f"config.distill.student_macs is {fraction}: {_misfit(config, error)}") from None
    model = dataclasses.replace(config.model, options={**config.model.options, option: width})
    return dataclasses.replace(config, model=model)


def _check_width_only(config: RunConfig, teacher: Teacher, inputs: tuple | None) -> None:
    """A student pruned from a teacher of its own zoo model must differ from it in the model's width option only.
    gankd.models.init_from_teacher checks layers and shapes, which some options (such as residual) leave alone;
    so the student's model is built at the teacher's width, given the teacher's weights, and must compute what
    the teacher computes (in eval mode, where dropout, which may differ, does nothing)."""
    name = config.model.name
    if teacher.config.name != name:
        return
    try:
        option = models.width_option(name)
    except ValueError:  # a model that declares no width option: init_from_teacher's checks only
        return
    ours, theirs = (models.resolved_options(name, model.options) for model in (config.model, teacher.config))
    twin = build_model(dataclasses.replace(config.model, options={**config.model.options, option: theirs[option]}))
    try:
        twin.load_state_dict(teacher.model.state_dict())
    except RuntimeError:  # other layers or shapes: init_from_teacher names them
        return
    inputs = models.example_inputs(teacher.model, batch_size=2) if inputs is None else inputs
    twin.to(adapter_device(teacher.model)).eval()
    with torch.no_grad():
        same = _outputs_close(twin(*inputs), teacher.model.eval()(*inputs))
    if not same:
        keys = [key for key in sorted(set(ours) | set(theirs)) if key != option and ours.get(key) != theirs.get(key)]
        differing = "; ".join(f"model.options.{key} is {ours.get(key)!r} but the teacher's is {theirs.get(key)!r}"
                              for key in keys) or "model.input differs from the teacher's"  # fmt: skip
        raise ValueError(
            f"{differing}: at the teacher's {option} the student's model does not compute the teacher's function, "
            f"and a student pruned from its teacher differs from it in {option} only; set those to the teacher's"
        )


def _outputs_close(first, second) -> bool:
    if isinstance(first, torch.Tensor) and isinstance(second, torch.Tensor):
        return first.shape == second.shape and torch.allclose(first, second, rtol=1e-4, atol=1e-5)
    if isinstance(first, (tuple, list)) and isinstance(second, (tuple, list)) and len(first) == len(second):
        return all(_outputs_close(a, b) for a, b in zip(first, second, strict=True))
    return type(first) is type(second)


def _misfit(config: RunConfig, error: RuntimeError) -> str:
    """What to say when the teacher cannot run on the run's data before training starts."""
    lines = str(error).strip().splitlines() or [type(error).__name__]
    return (f"the teacher cannot run on the data {config.data.name} ({lines[-1]}); check the teacher's options "
            "(in_channels, num_classes, image size) against the data")  # fmt: skip


def synchronized(module: nn.Module | None, dist: Distributed) -> nn.Module | None:
    """`module` with its batch norm layers as torch's SyncBatchNorm (statistics over all processes)."""
    if module is None:
        return None
    if dist.device.type != "cuda":
        raise ValueError("config.sync_batchnorm needs CUDA devices (torch's SyncBatchNorm runs on GPUs only); "
                         "set it to false on CPUs")  # fmt: skip
    return nn.SyncBatchNorm.convert_sync_batchnorm(module)
