"""The classifier task: images → class logits, judged by accuracy (and agreement with a teacher)."""

from __future__ import annotations

from torch import Tensor, nn
from torch.utils.data import Dataset

from gankd.metrics import MetricSettings, Predictions, evaluate_classifier

from .base import NoiseSource, Task, TaskBatch
from .registry import register


@register("classifier")
class ClassifierTask(Task):
    """Images → logits [N, classes], trained on (image, class label) items."""

    output = "logits"
    batch_fields = ("images", "labels")
    batch_format = "(images, labels) with labels None when no term needs them"
    default_terms = {"ce": 1.0}
    takes_unlabelled = True

    def split(self, images: Tensor, labels: Tensor | None) -> TaskBatch:
        return TaskBatch(inputs=(images,), target=labels, condition=None)

    def from_data(self, items: tuple[Tensor, ...], model: nn.Module, draw_noise: NoiseSource) -> tuple:
        return items[0], items[1]

    def default_metrics(self, dataset: Dataset, *, teacher: bool) -> list[str]:
        return ["accuracy", "agreement"] if teacher else ["accuracy"]

    def evidence(self) -> tuple[type, ...]:
        return (Predictions,)

    def evaluate(self, model, dataset, metrics, *, teacher, settings: MetricSettings, num_samples=None) -> dict:
        return evaluate_classifier(model, dataset, metrics, teacher=teacher, device=settings.device)

    @classmethod
    def accepts(cls, model: nn.Module, item: tuple) -> bool:
        return not hasattr(model, "nz") and isinstance(item[1], int)
