"""Argument checks shared by the fused ops: each error names the argument and what was seen."""

import math
import numbers
from collections.abc import Sequence

import torch
from torch import Tensor

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_float_tensor(name: str, value: object) -> Tensor:
    """`value` must be a tensor of a floating dtype gankd supports."""
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if value.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float16, bfloat16, float32 or float64, got dtype {value.dtype}")
    return value


def check_same_device(**tensors: Tensor) -> None:
    """All tensors must live on one device."""
    devices = {name: t.device for name, t in tensors.items() if t is not None}
    if len(set(devices.values())) > 1:
        seen = ", ".join(f"{name} on {device}" for name, device in devices.items())
        raise ValueError(f"all tensors must be on the same device, got {seen}")


def check_choice(name: str, value: object, choices: Sequence[str]) -> str:
    """`value` must be one of `choices` (the message lists them as gankd's option checks do)."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return value


def check_number(name: str, value: object, *, positive: bool = False) -> float:
    """`value` must be a finite Python (or NumPy) real number; with positive=True also > 0."""
    if isinstance(value, Tensor):
        # A tensor would need a device-to-host copy to check and to bake into the launch.
        raise TypeError(f"{name} must be a Python number, not a tensor")
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    number = float(value)
    # Not math.isfinite: under torch.compile(dynamic=True) a float argument is symbolic, and a comparison traces.
    if not abs(number) < math.inf:
        raise ValueError(f"{name} must be finite, got {number}")
    if positive and number <= 0:
        raise ValueError(f"{name} must be > 0, got {number}")
    return number
