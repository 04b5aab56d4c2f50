"""Argument checks of adapted_feature_match and its reference: each error names the argument and what was seen."""

import torch
from torch import Tensor

from ._checks import check_choice, check_float_tensor, check_same_device
from ._dispatch import IMPLS
from ._features import REDUCTIONS, check_feature_map

KINDS = ("mse", "l1")


def check_adapted_feature_match_options(*, kind: str = "mse", reduction: str = "mean", impl: str = "auto") -> None:
    """Raise ValueError for an unknown kind, reduction or impl of `adapted_feature_match`."""
    check_choice("kind", kind, KINDS)
    check_choice("reduction", reduction, REDUCTIONS)
    check_choice("impl", impl, IMPLS)


def check_adapter_inputs(student: object, teacher: object, weight: object, bias: object) -> None:
    """student [N, Cs, *spatial], teacher [N, Ct, *spatial], weight [Ct, Cs] or [Ct, Cs, 1, ...], bias [Ct] or None."""
    check_feature_map("student", student)
    check_feature_map("teacher", teacher)
    check_float_tensor("weight", weight)
    if bias is not None:
        check_float_tensor("bias", bias)
    check_same_device(student=student, teacher=teacher, weight=weight, bias=bias)
    if student.dim() != teacher.dim() or student.shape[0] != teacher.shape[0] or student.shape[2:] != teacher.shape[2:]:
        raise ValueError(
            "student [N, Cs, *spatial] and teacher [N, Ct, *spatial] must agree in batch and spatial sizes, got "
            f"{tuple(student.shape)} and {tuple(teacher.shape)}"
        )
    student_channels, teacher_channels = student.shape[1], teacher.shape[1]
    expected = (teacher_channels, student_channels)
    if weight.dim() < 2 or tuple(weight.shape[:2]) != expected or any(size != 1 for size in weight.shape[2:]):
        raise ValueError(
            f"weight must have shape [Ct, Cs] = {list(expected)} or [Ct, Cs, 1, 1] to map the student's Cs = "
            f"{student_channels} channels to the teacher's Ct = {teacher_channels}, got {tuple(weight.shape)}"
        )
    if bias is not None and tuple(bias.shape) != (teacher_channels,):
        raise ValueError(f"bias must have shape [Ct] = [{teacher_channels}] (teacher channels), got {list(bias.shape)}")


def compute_dtype(*tensors: Tensor | None) -> torch.dtype:
    """float32, or float64 when any input is float64."""
    dtypes = [t.dtype for t in tensors if t is not None]
    return torch.float64 if torch.float64 in dtypes else torch.float32
