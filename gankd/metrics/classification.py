"""Classifier metrics: top-1 accuracy against labels and agreement with the teacher's predictions."""

import torch
from torch import Tensor

from .registry import MetricSettings, Predictions, register_metric


def _check_logits(name: str, logits: Tensor) -> None:
    if not isinstance(logits, Tensor) or logits.dim() != 2:
        raise ValueError(f"{name} must be a tensor [N, classes], got {getattr(logits, 'shape', type(logits))}")


def top1_accuracy(logits: Tensor, labels: Tensor) -> float:
    """Fraction of rows whose arg-max equals the label."""
    _check_logits("logits", logits)
    if labels.shape != logits.shape[:1]:
        raise ValueError(f"labels must be [N] = [{logits.shape[0]}], got {tuple(labels.shape)}")
    if labels.numel() and not 0 <= int(labels.min()) <= int(labels.max()) < logits.shape[1]:
        raise ValueError(
            f"labels must be class indices in [0, {logits.shape[1] - 1}], got values from {int(labels.min())} to "
            f"{int(labels.max())} (-1 marks an unlabelled item, as a flat image folder gives): evaluate accuracy on "
            "labelled data (a folder of class subfolders)"
        )
    return (logits.argmax(1) == labels).float().mean().item() if labels.numel() else float("nan")


def teacher_agreement(student_logits: Tensor, teacher_logits: Tensor) -> float:
    """Fraction of rows where student and teacher predict the same class."""
    _check_logits("student_logits", student_logits)
    _check_logits("teacher_logits", teacher_logits)
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student_logits and teacher_logits must have one shape, got {tuple(student_logits.shape)} and "
            f"{tuple(teacher_logits.shape)}"
        )
    agree = student_logits.argmax(1) == teacher_logits.argmax(1)
    return agree.float().mean().item() if agree.numel() else float("nan")


@torch.no_grad()
def predict_logits(model: torch.nn.Module, loader, device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
    """Logits and labels over a loader of (images, labels) batches, in eval mode."""
    was_training = model.training
    model.eval()
    logits, labels = [], []
    try:
        for images, batch_labels in loader:
            logits.append(model(images.to(device)).float().cpu())
            labels.append(batch_labels)
    finally:
        model.train(was_training)
    return torch.cat(logits), torch.cat(labels)


@register_metric("accuracy", evidence=Predictions)
def _accuracy_metric(evidence: Predictions, names: list[str], settings: MetricSettings) -> tuple[dict, dict]:
    """Top-1 accuracy against the labels."""
    return {"accuracy": top1_accuracy(evidence.logits, evidence.labels)}, {}


@register_metric("agreement", evidence=Predictions, needs_teacher=True)
def _agreement_metric(evidence: Predictions, names: list[str], settings: MetricSettings) -> tuple[dict, dict]:
    """Fraction of predictions equal to the teacher's."""
    return {"agreement": teacher_agreement(evidence.logits, evidence.teacher_logits)}, {}
