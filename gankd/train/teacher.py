"""The teacher of a distillation run: a gankd run (or checkpoint), or a model trained elsewhere loaded from a
local weights file in its project's format (gankd.models.weight_formats), with its discriminator's weights."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from torch import nn

from gankd import models
from gankd.config import ModelConfig, RunConfig, config_from_saved

from .builders import build_model
from .checkpoint import load_checkpoint, trained_weights


@dataclass
class Teacher:
    """A loaded teacher: the model with its weights (CPU, eval mode), how to warm-start a discriminator from
    the teacher's (None when the teacher has none), and the model's config (name, options, input convention)."""

    model: nn.Module
    load_discriminator: Callable[[nn.Module], None] | None
    config: ModelConfig


def load_teacher(config: RunConfig) -> Teacher:
    """The teacher named by `config.distill.teacher`: a run directory or checkpoint file (its EMA weights
    when it kept them, its discriminator), or a TeacherConfig (model, weights file, weights format)."""
    source = config.distill.teacher
    if isinstance(source, str):
        state = load_checkpoint(source)
        model_config = config_from_saved(state["config"], f"the checkpoint at {source}").model
        model = build_model(model_config)
        model.load_state_dict(trained_weights(state))
        discriminator = state.get("discriminator")
        load = None if discriminator is None else (lambda module: module.load_state_dict(discriminator))
        return Teacher(model.eval(), load, model_config)
    model = build_model(source.model, weights=source.weights, weights_format=source.weights_format)
    load = None
    if source.discriminator_weights:
        load = partial(_load_file, path=source.discriminator_weights, weights_format=source.weights_format)
    return Teacher(model.eval(), load, source.model)


def _load_file(module: nn.Module, *, path: str, weights_format: str) -> None:
    models.load_weights(module, path, weights_format)
