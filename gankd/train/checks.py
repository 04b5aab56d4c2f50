"""Checks of a RunConfig that its types cannot express, each choice asked of the code that owns it (task
and term registries, the kernels' impl list, the trainer's schedules and precisions, metric evidence).
Run by gankd.config.load_config; the first problem raises ValueError naming the key."""

from __future__ import annotations

from gankd import data, metrics, models, tasks
from gankd.config import MODES, RunConfig, TeacherConfig
from gankd.distill import TEACHER_MODES
from gankd.distill.terms import build_terms
from gankd.kernels import IMPLS
from gankd.models.inputs import check_input_convention
from gankd.options import check_choice

from .builders import SCHEDULES
from .objective import STUDENT_INITS
from .stepper import PRECISIONS


def check_run(config: RunConfig) -> None:
    """Raise ValueError for the first impossible setting; fill `terms` with the task's defaults when a run
    without a teacher names none."""
    try:
        task = tasks.build(config.task)
    except ValueError as error:
        raise ValueError(f"config.{error}") from None
    check_choice("config.mode", config.mode, MODES)
    check_choice("config.impl", config.impl, IMPLS)
    check_choice("config.precision", config.precision, tuple(PRECISIONS))
    adversarial = _check_terms(config, task)
    if config.mode != "distill" and config.distill.student_macs:
        raise ValueError("config.distill.student_macs sizes a student against its teacher: it needs mode distill "
                         "(set it to 0, or set the width in model.options)")  # fmt: skip
    if config.mode != "distill" and config.distill.student_init != "random":
        raise ValueError(f"config.distill.student_init {config.distill.student_init!r} starts a student from its "
                         "teacher: it needs mode distill (set it to random)")  # fmt: skip
    _check_name("config.model.name", config.model.name, models.names())
    conventions = {"config.model": config.model, "config.gan.discriminator": config.gan.discriminator}
    if isinstance(config.distill.teacher, TeacherConfig):
        conventions["config.distill.teacher.model"] = config.distill.teacher.model
    for key, model in conventions.items():
        try:
            check_input_convention(model.input.mean, model.input.std, model.input.size)
        except (TypeError, ValueError) as error:
            raise ValueError(f"{key}.input: {error}") from None
    _check_name("config.data.name", config.data.name, data.names())
    if adversarial:
        _check_name("config.gan.discriminator.name", config.gan.discriminator.name, models.names())
    elif config.gan.conditional:
        raise ValueError("config.gan.conditional is true but no term trains a discriminator: add the adversarial "
                         "term or set gan.conditional: false")  # fmt: skip
    if config.eval.metrics:
        metrics.check_names(config.eval.metrics, task.evidence(), f"task {task.name!r} (config.eval.metrics)")
    check_choice("config.eval.split", config.eval.split, ("train", "test"))
    for name, optim in (("optim", config.optim), ("gan.optim", config.gan.optim)):
        check_choice(f"config.{name}.schedule", optim.schedule, SCHEDULES)
        if len(optim.betas) != 2:
            raise ValueError(f"config.{name}.betas must be two numbers (Adam's beta1, beta2), got {optim.betas}")
    if not 0.0 <= config.ema < 1.0:
        raise ValueError(f"config.ema must be in [0, 1), got {config.ema}")
    positive = {"steps": config.steps, "checkpoint_every": config.checkpoint_every, "log_every": config.log_every,
                "data.batch_size": config.data.batch_size, "optim.accumulate": config.optim.accumulate}  # fmt: skip
    for name, value in positive.items():
        if value < 1:
            raise ValueError(f"config.{name} must be >= 1, got {value}")
    non_negative = {
        "sample_every": config.sample_every,
        "eval.every": config.eval.every,
        "eval.num_samples": config.eval.num_samples,
        "data.num_workers": config.data.num_workers,
        "data.limit_per_class": config.data.limit_per_class,
        "optim.warmup_steps": config.optim.warmup_steps,
        "optim.grad_clip": config.optim.grad_clip,
        "gan.optim.grad_clip": config.gan.optim.grad_clip,
    }
    for name, value in non_negative.items():
        if value < 0:
            raise ValueError(f"config.{name} must be >= 0, got {value}")


def _check_teacher(config: RunConfig) -> None:
    teacher = config.distill.teacher
    if not teacher:
        raise ValueError("config.mode is 'distill' but config.distill.teacher is empty: give the teacher's run "
                         "directory, or {model: {name, options}, weights: FILE, weights_format: FORMAT}")  # fmt: skip
    if isinstance(teacher, TeacherConfig):
        if not teacher.weights:
            raise ValueError("config.distill.teacher.weights is empty: a teacher needs its trained weights (a local "
                             "file; gankd never downloads)")  # fmt: skip
        if not teacher.model.name:
            raise ValueError(
                "config.distill.teacher.model is missing: name the teacher's architecture, e.g. "
                "model: {name: resnet_g, options: {ngf: 64, n_blocks: 9}} (see gankd models)"
            )
        _check_name("config.distill.teacher.model.name", teacher.model.name, models.names())
        check_choice("config.distill.teacher.weights_format", teacher.weights_format, models.weights_formats())
    check_choice("config.distill.teacher_mode", config.distill.teacher_mode, TEACHER_MODES)
    check_choice("config.distill.student_init", config.distill.student_init, STUDENT_INITS)
    if config.distill.student_macs:
        if not 0 < config.distill.student_macs <= 1:
            raise ValueError(f"config.distill.student_macs must be in (0, 1] (a share of the teacher's MACs; 0 keeps "
                             f"model.options' width), got {config.distill.student_macs}")  # fmt: skip
        try:
            models.width_option(config.model.name)
        except ValueError as error:
            raise ValueError(f"config.distill.student_macs: {error}") from None


def _check_name(key: str, name: str, valid: list[str]) -> None:
    if name not in valid:
        raise ValueError(f"{key} {name!r} is not registered; valid names: {', '.join(valid)}")


def _check_terms(config: RunConfig, task: tasks.Task) -> bool:
    """Check the terms (filling a teacher-less run's defaults); whether one of them trains a discriminator."""
    distilling = config.mode == "distill"
    if distilling:
        _check_teacher(config)
    if not config.terms:
        if distilling:
            raise ValueError("config.mode is 'distill' but config.terms names no loss term, e.g. terms: {output: 1.0}")
        config.terms = dict(task.default_terms)
    try:
        built = build_terms(config.terms, task=task, impl=config.impl)
    except (ValueError, TypeError) as error:
        raise ValueError(f"config.terms: {error}") from None
    using_teacher = [name for name, term in built.items() if term.needs_teacher]
    if using_teacher and not distilling:
        raise ValueError(f"config.terms: {using_teacher[0]!r} needs a teacher, and a {config.mode!r} run has none: "
                         "set mode: distill and distill.teacher, or leave the term out")  # fmt: skip
    if distilling and not using_teacher:
        raise ValueError(f"config.mode is 'distill' but none of the terms {list(built)} uses the teacher: add one "
                         "(e.g. output, kd, adapted) or use mode: scratch")  # fmt: skip
    if config.data.keep_unlabelled:
        _check_unlabelled(config, task, built)
    return any(term.needs_discriminator for term in built.values())


def _check_unlabelled(config: RunConfig, task: tasks.Task, built: dict) -> None:
    """config.data.keep_unlabelled needs limited labels, a task that can train on items without one, terms that
    skip them where they read labels, and a teacher term to learn from them."""
    if not config.data.limit_per_class:
        raise ValueError("config.data.keep_unlabelled hides the labels beyond config.data.limit_per_class items per "
                         "class: set limit_per_class > 0, or keep_unlabelled: false")  # fmt: skip
    if not task.takes_unlabelled:
        raise ValueError(f"config.data.keep_unlabelled: task {task.name!r} cannot train on items without a label "
                         "(a task whose labels are only targets can, such as 'classifier'): set keep_unlabelled: "
                         "false")  # fmt: skip
    reading = [name for name, term in built.items() if term.needs_target and not term.skips_unlabelled]
    if reading:
        raise ValueError(f"config.terms: {reading[0]!r} reads the labels and cannot skip the hidden ones that "
                         "config.data.keep_unlabelled gives: leave it out, or set keep_unlabelled: false")  # fmt: skip
    if not any(term.needs_teacher for term in built.values()):
        raise ValueError(f"config.data.keep_unlabelled: none of the terms {list(built)} learns from items without "
                         "a label (none uses the teacher): set keep_unlabelled: false, or distil")  # fmt: skip
