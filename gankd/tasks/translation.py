"""Unpaired image-to-image translation (CycleGAN): a generator distilled from source-domain images alone."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from gankd.metrics import MetricSettings, PairedImages, measure

from .base import NoiseSource, TaskBatch, eval_outputs, shown_with
from .generation import Image2ImageTask
from .registry import register


@register("translation")
class TranslationTask(Image2ImageTask):
    """Source-domain images → translated images, without targets: the data are images of the source domain
    only (an `image_folder`; labels, if any, are ignored), so the student learns the teacher's mapping from
    the teacher alone (output and feature terms; no ground truth, no discriminator). Evaluation compares
    the student's outputs with the teacher's on the evaluation split, pair by pair: psnr, ssim (and lpips)
    against the teacher's translation, not against any ground truth.
    """

    batch_format = "(inputs, None): source-domain images, no targets"
    has_targets = False
    default_terms = {}
    compares_with_teacher = True

    def split(self, inputs: Tensor, targets: Tensor | None) -> TaskBatch:
        return TaskBatch(inputs=(inputs,), target=None, condition=inputs)

    def from_data(self, items: tuple[Tensor, ...], model: nn.Module, draw_noise: NoiseSource) -> tuple:
        return items[0], None

    def real_images(self, items: tuple[Tensor, ...]) -> Tensor | None:
        return None

    def check_discriminator(self, discriminator: nn.Module, conditional: bool) -> None:
        raise ValueError(
            "task 'translation' has no target-domain images for a discriminator to call real: distil with output "
            "and feature terms (output, adapted, feature, lpips), without adversarial"
        )

    def default_metrics(self, dataset: Dataset, *, teacher: bool) -> list[str]:
        return ["psnr", "ssim"] if teacher else []

    def evidence(self) -> tuple[type, ...]:
        return (PairedImages,)

    def evaluate(self, model, dataset, metrics, *, teacher, settings: MetricSettings, num_samples=None) -> dict:
        if not metrics:
            return {}
        if teacher is None:
            raise ValueError("task 'translation' measures the student's outputs against the teacher's: evaluate a "
                             "distilled run, or give the teacher (gankd eval --teacher-model ...)")  # fmt: skip
        student, reference = [], []
        with torch.no_grad():
            for items in DataLoader(dataset, batch_size=16):
                images = items[0] if isinstance(items, (list, tuple)) else items
                student.append(eval_outputs(model, images, settings.device))
                # The teacher keeps its mode (distill.teacher_mode), as during distillation.
                reference.append(teacher(images.to(settings.device)).float().cpu().clamp(-1, 1))
        return measure([PairedImages(torch.cat(student), torch.cat(reference))], metrics, settings)

    @torch.no_grad()
    def sample_grid(self, model: nn.Module, dataset: Dataset, device) -> Tensor:
        # Two rows of eight: the inputs and the outputs.
        inputs = torch.stack([dataset[index][0] for index in range(min(8, len(dataset)))])
        outputs = eval_outputs(model, inputs, device)
        return torch.cat([shown_with(inputs, outputs.shape[1]), outputs])
