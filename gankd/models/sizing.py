"""Size a student to a MACs budget: the widest setting of its model's width option (ngf, ndf, width) whose
MACs are at most a fraction of its teacher's.

A zoo class names its width option in a `width_option` class attribute; a user's registered model does the
same to be sized this way. MACs are counted as gankd.models.cost counts them, for both models on the
teacher's example inputs (gankd.models.example_inputs), the student built on the meta device (no weights,
no compute), so the fraction is the ratio the compression table reports.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import Tensor, nn

from gankd.models.cost import cost, example_inputs
from gankd.models.inputs import set_input_convention
from gankd.models.zoo import build, constructor

# Widths are searched up to this bound (far above any zoo model's teacher width).
MAX_WIDTH = 1 << 16


def width_option(name: str) -> str:
    """The option of model `name` that sets its width (its constructor's `width_option` attribute)."""
    option = getattr(constructor(name), "width_option", None)
    if not isinstance(option, str):
        raise ValueError(
            f"model {name!r} declares no width_option, so no width can be chosen for a MACs budget: set the "
            "student's width in its options instead, or give its class a width_option attribute (e.g. 'ngf')"
        )
    return option


def resolved_options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """The options model `name` is built with from `options`: its constructor's defaults filled in."""
    signature = inspect.signature(constructor(name))
    try:
        bound = signature.bind_partial(**options)
    except TypeError as error:
        raise ValueError(f"model {name!r}: {error}") from None
    bound.apply_defaults()
    resolved = {}
    for key, value in bound.arguments.items():
        kind = signature.parameters[key].kind
        if kind is inspect.Parameter.VAR_KEYWORD:
            resolved.update(value)
        elif kind is not inspect.Parameter.VAR_POSITIONAL:
            resolved[key] = value
    return resolved


def width_for_macs(
    name: str,
    options: dict[str, Any],
    teacher: nn.Module,
    fraction: float,
    inputs: tuple[Tensor, ...] | None = None,
    student_input: dict[str, Any] | None = None,
    prunable: bool = False,
) -> int:
    """The largest width of model `name` (its `width_option`, the other `options` as given) whose MACs are at
    most `fraction` of `teacher`'s, both counted on `inputs` (default: `example_inputs(teacher)`); the student
    with `student_input` (set_input_convention's mean, std, size) when it resizes its inputs as the teacher may.
    With `prunable`, only widths at which the student has the teacher's layers (state-dict keys) count, so that
    init_from_teacher can prune the teacher to it (a CIFAR ResNet has a shortcut conv at some widths only).

    Raises ValueError when `fraction` is not in (0, 1] or when even width 1 costs more than the budget (the
    message gives the smallest fraction reachable: reduce the depth options instead).
    """
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
        raise ValueError(f"fraction must be a number in (0, 1] (a share of the teacher's MACs), got {fraction!r}")
    option = width_option(name)
    if inputs is None:
        inputs = example_inputs(teacher)
    budget = fraction * cost(teacher, *inputs)["macs"]
    shapes = [(value.shape, value.dtype) for value in inputs]

    def macs(width: int) -> int:
        with torch.device("meta"):
            student = build(name, **{**options, option: width})
            if student_input:
                set_input_convention(student, **student_input)
            meta_inputs = [torch.empty(shape, dtype=dtype) for shape, dtype in shapes]
        return cost(student, *meta_inputs)["macs"]

    smallest = macs(1)
    if smallest > budget:
        raise ValueError(
            f"even {option}=1 costs {smallest / (budget / fraction):.3g} of the teacher's MACs, more than {fraction}: "
            f"raise the fraction, or make the student shallower in its other options"
        )
    # MACs grow with the width: double past the budget, then bisect (fits, too_wide].
    fits, too_wide = 1, 2
    while too_wide <= MAX_WIDTH and macs(too_wide) <= budget:
        fits, too_wide = too_wide, too_wide * 2
    if too_wide <= MAX_WIDTH:
        while too_wide - fits > 1:
            middle = (fits + too_wide) // 2
            fits, too_wide = (middle, too_wide) if macs(middle) <= budget else (fits, middle)
    if not prunable:
        return fits
    teacher_keys = set(teacher.state_dict())
    for width in range(fits, 0, -1):  # MACs fall with the width: the widest prunable one within the budget
        with torch.device("meta"):
            if set(build(name, **{**options, option: width}).state_dict()) == teacher_keys:
                return width
    raise ValueError(
        f"no {option} up to {fits} gives {name} {options} the teacher's layers (state-dict keys), so the teacher "
        "cannot be pruned to it: build the student with the teacher's options except the width"
    )
