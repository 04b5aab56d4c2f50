"""Argument checks of softmax_kl and softmax_kl_ref: each error names the argument and what was seen."""

import torch
from torch import Tensor

from ._checks import check_choice, check_float_tensor, check_number, check_same_device
from ._dispatch import IMPLS

DIRECTIONS = ("forward", "reverse", "jsd")
REDUCTIONS = ("batchmean", "sum", "none")


def check_softmax_kl_options(temperature: float = 1.0, *, direction: str = "forward", beta: float = 0.5,
                             kd_weight: float = 1.0, ce_weight: float = 0.0, ignore_index: int = -100,
                             reduction: str = "batchmean", impl: str = "auto") -> None:  # fmt: skip
    """Raise ValueError/TypeError for a bad scalar option of `softmax_kl` (tensors are checked per call)."""
    check_number("temperature", temperature, positive=True)
    check_choice("impl", impl, IMPLS)
    check_choice("direction", direction, DIRECTIONS)
    check_choice("reduction", reduction, REDUCTIONS)
    check_number("kd_weight", kd_weight)
    check_number("ce_weight", ce_weight)
    if direction == "jsd" and not 0.0 < check_number("beta", beta) < 1.0:
        raise ValueError(f"beta must lie in (0, 1) for direction='jsd', got {beta}")
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, int):
        raise TypeError(f"ignore_index must be an int, got {type(ignore_index).__name__}")


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
