"""The channel counts of tapped modules (what the "adapted" term's 1×1 adapters are built for), and the
device a model's new parameters start on."""

from __future__ import annotations

import itertools

import torch
from torch import nn

from gankd.distill.taps import resolve_module, split_tap_path

# Attributes by which layers declare how many channels (or features) they output, in order of preference.
_CHANNEL_ATTRIBUTES = ("out_channels", "num_features", "num_channels", "out_features")


def declared_channels(model: nn.Module, path: str, *, role: str = "model") -> int | None:
    """The channels the module at `path` outputs, as its layers declare them, or None when none declares any.

    Reads the last layer with `out_channels`, `num_features`, `num_channels` or `out_features` (convs,
    norms, linears) registered inside the module, or before it when it has none (a pooling or activation
    tap). This assumes modules are registered in the order they run, as in nn.Sequential and the gankd
    zoo; the first forward checks the real shapes.

    A tap path with an element selector ("synthesis.b64[0]") gives None once its module part resolves: no
    layer declares the channels of one element of a tuple, so they are read from an example forward.
    """
    module_path, selectors = split_tap_path(path, role=role)
    resolve_module(model, module_path, role=role)
    if selectors:
        return None
    channels, inside = None, False
    for name, module in model.named_modules():
        within = path == "" or name == path or name.startswith(path + ".")
        if inside and not within:
            break
        inside = inside or within
        for attribute in _CHANNEL_ATTRIBUTES:
            value = getattr(module, attribute, None)
            if isinstance(value, int) and not isinstance(value, bool):
                channels = value
                break
    return channels


def adapter_device(model: nn.Module) -> torch.device:
    """Where adapters for `model` start: the device of its first parameter or buffer (CPU when it has none)."""
    tensor = next(itertools.chain(model.parameters(), model.buffers()), None)
    return torch.device("cpu") if tensor is None else tensor.device
