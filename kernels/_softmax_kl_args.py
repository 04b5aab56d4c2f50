"""Argument checks of softmax_kl and softmax_kl_ref: each error names the argument and what was seen."""

import numbers

import torch
from torch import Tensor

from ._checks import check_choice, check_float_tensor, check_number, check_same_device
from ._dispatch import IMPLS

DIRECTIONS = ("forward", "reverse", "jsd")
REDUCTIONS = ("batchmean", "sum", "none")
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def check_softmax_kl_options(temperature: float = 1.0, *, direction: str = "forward", beta: float = 0.5,
                             t2_scale: bool = True, kd_weight: float = 1.0, ce_weight: float = 0.0,
                             ignore_index: int = -100, reduction: str = "batchmean",
                             impl: str = "auto") -> int:  # fmt: skip
    """Raise ValueError/TypeError for a bad scalar option of `softmax_kl` (tensors are checked per call); returns
    ignore_index as a Python int (a NumPy integer is accepted)."""
    check_number("temperature", temperature, positive=True)
    check_choice("impl", impl, IMPLS)
    check_choice("direction", direction, DIRECTIONS)
    check_choice("reduction", reduction, REDUCTIONS)
    check_number("kd_weight", kd_weight)
    check_number("ce_weight", ce_weight)
    if not 0.0 < check_number("beta", beta) < 1.0 and direction == "jsd":
        raise ValueError(f"beta must lie in (0, 1) for direction='jsd', got {beta}")
    if not isinstance(t2_scale, bool):
        raise TypeError(f"t2_scale must be True or False, got {t2_scale!r}")
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, numbers.Integral):
        raise TypeError(f"ignore_index must be an int, got {type(ignore_index).__name__}")
    if not INT64_MIN <= ignore_index <= INT64_MAX:
        raise ValueError(f"ignore_index must fit in int64 (the labels' dtype at most), got {ignore_index}")
    return int(ignore_index)


def check_inputs(student_logits, teacher_logits, labels, ce_weight) -> None:
    check_float_tensor("student_logits", student_logits)
    check_float_tensor("teacher_logits", teacher_logits)
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student_logits and teacher_logits must have the same shape, got {tuple(student_logits.shape)} "
            f"and {tuple(teacher_logits.shape)}"
        )
    if student_logits.dim() == 0 or student_logits.shape[-1] == 0:
        raise ValueError(f"logits need a non-empty class dimension (last), got shape {tuple(student_logits.shape)}")
    if labels is not None and not isinstance(labels, Tensor):
        raise TypeError(f"labels must be a torch.Tensor or None, got {type(labels).__name__}")
    check_same_device(student_logits=student_logits, teacher_logits=teacher_logits, labels=labels)
    if labels is None:
        if ce_weight != 0.0:
            raise ValueError(f"ce_weight={ce_weight} needs labels, got labels=None")
        return
    if labels.dtype == torch.bool or labels.is_floating_point() or labels.is_complex():
        raise TypeError(f"labels must have an integer dtype, got {labels.dtype}")
    if labels.shape != student_logits.shape[:-1]:
        raise ValueError(
            f"labels must have the logits' leading shape {tuple(student_logits.shape[:-1])}, got {tuple(labels.shape)}"
        )


def check_label_values(labels: Tensor, n_classes: int, ignore_index: int) -> None:
    # Checking values on a GPU would need a host sync; there, a bad label makes its row's loss NaN instead.
    if labels.device.type != "cpu" or labels.numel() == 0 or torch.compiler.is_compiling():
        return
    bad = (labels != ignore_index) & ((labels < 0) | (labels >= n_classes))
    if bad.any():
        raise ValueError(
            f"labels must lie in [0, {n_classes}) or equal ignore_index={ignore_index}, "
            f"got {labels[bad].flatten()[0].item()}"
        )
