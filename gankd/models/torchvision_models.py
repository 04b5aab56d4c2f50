"""Any torchvision classification model by name, randomly initialized or loaded from a local weights file.

torchvision's own `weights=` enums download on first use; gankd never does: pass `weights_path`, a file
holding a state dict (for example one saved earlier with `torch.save(model.state_dict(), path)`).
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from gankd.models.weight_formats import load_weights
from gankd.options import check_int


def classification_archs() -> list[str]:
    """The names of torchvision's classification models (`torchvision.models.list_models`)."""
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def build_torchvision(arch: str, num_classes: int = 1000, weights_path: str | Path | None = None) -> nn.Module:
    """torchvision classification model `arch` with `num_classes` outputs; weights from `weights_path` if given.

    The weights file must hold a state dict that fits the model exactly (same `num_classes`); it is loaded
    with `torch.load(..., weights_only=True)`. `weights_path` is the same as
    `gankd.models.build("torchvision", ..., weights=path, weights_format="torchvision")`. The model gets a
    `feature_layers` attribute, see `torchvision_feature_layers`.
    """
    import torchvision

    if not isinstance(arch, str):
        raise TypeError(f"arch must be a str, got {type(arch).__name__}")
    archs = classification_archs()
    if arch not in archs:
        raise ValueError(f"unknown torchvision classification model {arch!r}; valid names: {', '.join(archs)}")
    check_int("num_classes", num_classes, minimum=1)
    model = torchvision.models.get_model(arch, weights=None, num_classes=num_classes)
    if weights_path is not None:
        load_weights(model, weights_path, "torchvision")
    model.feature_layers = torchvision_feature_layers(model)
    return model


def torchvision_feature_layers(model: nn.Module) -> tuple[str, ...]:
    """Natural distillation taps of a torchvision classifier, as module paths.

    ResNet-like models (resnet, resnext, wide_resnet): `layer1` … `layer4`. RegNet: the stages
    `trunk_output.block<i>`. Models with a `features` Sequential (VGG, AlexNet, MobileNet, EfficientNet,
    DenseNet, ConvNeXt, SqueezeNet, ...): each child `features.<i>`. Vision transformers: each encoder
    layer. Others: every top-level child but the last (the classifier head).
    """
    children = dict(model.named_children())
    if all(f"layer{i}" in children for i in range(1, 5)):
        return tuple(f"layer{i}" for i in range(1, 5))
    for container in ("trunk_output", "features", "layers"):
        if isinstance(children.get(container), nn.Sequential):
            return tuple(f"{container}.{name}" for name, _ in children[container].named_children())
    encoder_layers = getattr(getattr(model, "encoder", None), "layers", None)
    if isinstance(encoder_layers, nn.Sequential):
        return tuple(f"encoder.layers.{name}" for name, _ in encoder_layers.named_children())
    return tuple(list(children)[:-1])
