"""The model registry: names → constructors, feature taps, and the teacher/student cost table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from gankd.models.classifiers import CifarResNet, SmallCNN, resnet8x4, resnet32x4
from gankd.models.cost import cost, example_inputs
from gankd.models.discriminators import DCGANDiscriminator, PatchGANDiscriminator
from gankd.models.generators import DCGANGenerator, ResnetGenerator
from gankd.models.torchvision_models import build_torchvision
from gankd.models.unet import UnetGenerator
from gankd.models.weight_formats import load_weights
from gankd.registry import Registry

_MODELS = Registry("model")
_MODELS.add("dcgan_g", DCGANGenerator)
_MODELS.add("resnet_g", ResnetGenerator)
_MODELS.add("unet_g", UnetGenerator)
_MODELS.add("dcgan_d", DCGANDiscriminator)
_MODELS.add("patchgan_d", PatchGANDiscriminator)
_MODELS.add("cifar_resnet", CifarResNet)
_MODELS.add("resnet8x4", resnet8x4)
_MODELS.add("resnet32x4", resnet32x4)
_MODELS.add("small_cnn", SmallCNN)
_MODELS.add("torchvision", build_torchvision)

# The rows of `gankd models` and of the README table: each name at a teacher and a student setting.
TEACHER_STUDENT: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "dcgan_g": ({"ngf": 64}, {"ngf": 16}),
    "resnet_g": ({"ngf": 64}, {"ngf": 16}),
    "unet_g": ({"ngf": 64}, {"ngf": 16}),
    "dcgan_d": ({"ndf": 64}, {"ndf": 16}),
    "patchgan_d": ({"ndf": 64}, {"ndf": 16}),
    "cifar_resnet": ({"depth": 32, "width": 4}, {"depth": 32, "width": 1}),
    "resnet8x4": ({}, {}),
    "resnet32x4": ({}, {}),
    "small_cnn": ({"width": 32}, {"width": 8}),
    "torchvision": ({"arch": "resnet50"}, {"arch": "resnet18"}),
}


def build(name: str, *, weights: str | Path | None = None, weights_format: str = "gankd", **options: Any) -> nn.Module:
    """Build the model registered under `name` with `options` (its constructor's keyword arguments), and load
    the local file `weights` written in `weights_format` when given (see gankd.models.weight_formats:
    "gankd", "cyclegan", "dcgan_example", "torchvision"; the file's keys are converted, then loaded strictly).

    Unknown names raise ValueError listing `names()`; unknown options raise TypeError listing the valid
    ones; options of the wrong type or value raise TypeError / ValueError naming the option; a weights file
    that does not fit raises WeightsFormatError naming the keys.
    """
    model = _MODELS.build(name, **options)
    if weights is not None:
        load_weights(model, weights, weights_format)
    return model


def constructor(name: str):
    """The class (or factory) registered under `name`; unknown names raise ValueError listing `names()`."""
    return _MODELS.get(name)


def names() -> list[str]:
    """The registered model names, sorted."""
    return _MODELS.names()


def register(name: str):
    """Decorator that adds a model class (or factory) to the zoo under `name`, from any module:

        @gankd.models.register("my_g")
        class MyGenerator(nn.Module): ...

    Then `build("my_g", ...)` and `model: {name: my_g}` in a run config (list the module in `imports`).
    """
    return _MODELS.register(name)


def feature_layers(model: nn.Module) -> tuple[str, ...]:
    """The module paths that are `model`'s natural distillation taps (each resolves with `get_submodule`)."""
    layers = getattr(model, "feature_layers", None)
    if layers is None:
        raise ValueError(f"{type(model).__name__} declares no feature_layers; pass module paths explicitly")
    for path in layers:
        model.get_submodule(path)
    return tuple(layers)


def cost_table() -> list[dict[str, Any]]:
    """Params and MACs (batch 1, default input size) of every registered model at its teacher and student
    setting from `TEACHER_STUDENT`; models are built on the meta device, so nothing is computed."""
    rows = []
    for name in names():
        settings = TEACHER_STUDENT.get(name, ({}, {}))
        is_preset = settings[0] == settings[1]
        for role, options in zip(("teacher", "student"), settings, strict=True):
            if is_preset and role == "student":
                continue  # a preset has one setting: one row
            with torch.device("meta"):
                model = build(name, **options)
                inputs = example_inputs(model)
            counts = cost(model, *inputs)
            rows.append({
                "name": name,
                "role": "preset" if is_preset else role,
                "options": ", ".join(f"{key}={value}" for key, value in options.items()),
                "input": " + ".join("x".join(map(str, tensor.shape)) for tensor in inputs),
                **counts,
            })  # fmt: skip
    return rows
