"""Input conventions: what a model trained elsewhere expects its images to look like, applied before its forward.

gankd's data give images in [-1, 1] at the data set's size. A torchvision ImageNet classifier expects images
in [0, 1] normalised by ImageNet's mean and std, usually at 224 px; other projects' generators may expect
other sizes. `set_input_convention(model, mean=..., std=..., size=...)` registers a forward pre-hook that
converts the first positional input, so the model's module paths (feature taps), state dict and outputs
stay as they are.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gankd.options import check_int


def set_input_convention(
    model: nn.Module, *, mean: Sequence[float] = (), std: Sequence[float] = (), size: int = 0
) -> nn.Module:
    """Make `model` convert its image input x (in [-1, 1]) before each forward: resize to `size` × `size`
    (bilinear, antialiased; 0 = keep), then with `mean`/`std` given ((x + 1) / 2 − mean) / std per channel.
    Returns `model` (its `input_convention` attribute records the settings). Raises ValueError for a mean
    and std of different lengths, a non-positive std or a negative size."""
    mean, std = check_input_convention(mean, std, size)
    if not mean and not size:
        return model
    hook = _InputConvention(mean, std, size)
    model.register_forward_pre_hook(hook)
    model.input_convention = {"mean": mean, "std": std, "size": size}
    return model


def check_input_convention(mean: Sequence[float], std: Sequence[float], size: int) -> tuple[list[float], list[float]]:
    """(mean, std) as floats; ValueError naming `mean`, `std` or `size` where they cannot be a convention."""
    mean, std = [float(value) for value in mean], [float(value) for value in std]
    check_int("size", size, minimum=0)
    if len(mean) != len(std):
        raise ValueError(f"mean and std must have one value per channel each, got {len(mean)} and {len(std)}")
    if any(value <= 0 for value in std):
        raise ValueError(f"std must be positive, got {std}")
    return mean, std


class _InputConvention:
    def __init__(self, mean: list[float], std: list[float], size: int):
        self.mean, self.std, self.size = mean, std, size

    def __call__(self, module: nn.Module, inputs: tuple) -> tuple:
        if not inputs or not isinstance(inputs[0], Tensor) or inputs[0].dim() != 4:
            given = f"{type(inputs[0]).__name__} {tuple(getattr(inputs[0], 'shape', ()))}" if inputs else "nothing"
            raise ValueError(f"{type(module).__name__} has an input convention (mean/std/size), so its first input "
                             f"must be images [N, C, H, W]; got {given}")  # fmt: skip
        images = inputs[0]
        if self.size and tuple(images.shape[-2:]) != (self.size, self.size):
            images = F.interpolate(images, size=(self.size, self.size), mode="bilinear", antialias=True,
                                   align_corners=False)  # fmt: skip
        if self.mean:
            if images.shape[1] != len(self.mean):
                raise ValueError(f"input convention: {len(self.mean)} channel means for images with "
                                 f"{images.shape[1]} channels")  # fmt: skip
            shape = (1, -1, 1, 1)
            mean = torch.tensor(self.mean, dtype=images.dtype, device=images.device).view(shape)
            std = torch.tensor(self.std, dtype=images.dtype, device=images.device).view(shape)
            images = ((images + 1) / 2 - mean) / std
        return (images, *inputs[1:])
