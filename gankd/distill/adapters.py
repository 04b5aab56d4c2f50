"""1×1 adapters from student to teacher channels, and the channel counts they are built for.

All adapter creation happens in `make_adapter_loss`: one place to change when the fused
`gankd.losses.AdaptedFeatureLoss` lands (see the comment there).
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gankd.distill.taps import resolve_module
from gankd.kernels import feature_match

# Attributes by which layers declare how many channels (or features) they output, in order of preference.
_CHANNEL_ATTRIBUTES = ("out_channels", "num_features", "num_channels", "out_features")


def make_adapter_loss(student_channels: int, teacher_channels: int, *, impl: str = "auto") -> nn.Module:
    """The "adapted" loss of one tapped pair: a learned 1×1 adapter (student → teacher channels), then mse.

    The returned module holds `weight` [Ct, Cs, 1, 1] and `bias` [Ct], initialised as nn.Conv2d's, and its
    `forward(student_features, teacher_features)` returns the float32 mean squared error.
    """
    # Switches to gankd.losses.AdaptedFeatureLoss(student_channels, teacher_channels, kind="mse", impl=impl)
    # when that fused module is merged: same parameters (weight, bias), same state-dict keys, same value.
    return ConvAdapterLoss(student_channels, teacher_channels, impl=impl)


class ConvAdapterLoss(nn.Module):
    """A 1×1 convolution adapter (as nn.Conv2d(Cs, Ct, 1)) followed by `feature_match(kind="mse")`.

    Takes student maps [N, Cs, *spatial] (or [N, Cs]) and teacher maps [N, Ct, *spatial].
    """

    def __init__(self, student_channels: int, teacher_channels: int, *, impl: str = "auto"):
        super().__init__()
        conv = nn.Conv2d(student_channels, teacher_channels, 1)
        self.weight, self.bias = conv.weight, conv.bias
        self.student_channels, self.teacher_channels, self.impl = student_channels, teacher_channels, impl

    def forward(self, student: Tensor, teacher: Tensor) -> Tensor:
        # Positions flattened to [N, Cs, P, 1] so that one conv2d serves maps of any rank, then reshaped back.
        positions = student.reshape(student.shape[0], student.shape[1], -1, 1)
        adapted = F.conv2d(positions, self.weight.to(student.dtype), self.bias.to(student.dtype))
        adapted = adapted.reshape(student.shape[0], self.teacher_channels, *student.shape[2:])
        return feature_match(adapted, teacher, kind="mse", impl=self.impl)

    def extra_repr(self) -> str:
        return f"{self.student_channels}, {self.teacher_channels}, impl={self.impl!r}"


def declared_channels(model: nn.Module, path: str, *, role: str = "model") -> int | None:
    """The channels the module at `path` outputs, as its layers declare them, or None when none declares any.

    Reads the last layer with `out_channels`, `num_features`, `num_channels` or `out_features` (convs,
    norms, linears) registered inside the module, or before it when it has none (a pooling or activation
    tap). This assumes modules are registered in the order they run, as in nn.Sequential and the gankd
    zoo; the first forward checks the real shapes.
    """
    resolve_module(model, path, role=role)
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
