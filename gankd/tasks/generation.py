"""The image tasks: noise-to-image generators (conditional or not) and image-to-image models (pix2pix)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from gankd.metrics import (
    ImageSets,
    MetricSettings,
    PairedImages,
    evaluate_generator,
    evaluate_paired,
    sample_generator,
)

from .base import NoiseSource, Task, TaskBatch, eval_outputs, shown_with
from .registry import register

GRID_SEED = 1234  # sample grids draw the same noise at every step, so grids of one run compare


@register("generator")
class GeneratorTask(Task):
    """Noise (and class labels when `model.num_classes` > 0) → images. The model needs an `nz` attribute
    (its noise dimensions). A conditional discriminator sees the labels as its second argument (a
    projection discriminator such as dcgan_d with num_classes)."""

    output = "image"
    batch_fields = ("noise", "labels")
    batch_format = "(noise, labels) with labels None for an unconditional generator"
    has_targets = False  # the labels condition the generator; there is no image to compare its output with
    default_terms = {"adversarial": 1.0}

    def split(self, noise: Tensor, labels: Tensor | None) -> TaskBatch:
        return TaskBatch(inputs=(noise,) if labels is None else (noise, labels), target=None, condition=labels)

    def from_data(self, items: tuple[Tensor, ...], model: nn.Module, draw_noise: NoiseSource) -> tuple:
        noise_dims = getattr(model, "nz", None)
        if not isinstance(noise_dims, int):
            raise ValueError(f"task 'generator' trains noise-to-image models with an `nz` attribute (noise "
                             f"dimensions); {type(model).__name__} has none")  # fmt: skip
        labels = items[1] if getattr(model, "num_classes", 0) else None
        return draw_noise(noise_dims), labels

    def real_images(self, items: tuple[Tensor, ...]) -> Tensor:
        return items[0]

    def discriminator_inputs(self, images: Tensor, condition: Tensor | None) -> tuple[Tensor, ...]:
        return images, condition

    def check_discriminator(self, discriminator: nn.Module, conditional: bool) -> None:
        classes = getattr(discriminator, "num_classes", 0)
        if classes and not conditional:
            raise ValueError(
                f"the discriminator is class-conditional (num_classes={classes}) but is used unconditionally: "
                "pass conditional_discriminator=True (config: gan.conditional: true)"
            )

    def default_metrics(self, dataset: Dataset, *, teacher: bool) -> list[str]:
        # A data set may name proxy metrics that need no downloaded weights (digits); else standard FID/KID.
        return list(getattr(dataset, "proxy_metrics", ("fid", "kid")))

    def evidence(self) -> tuple[type, ...]:
        return (ImageSets,)

    def evaluate(self, model, dataset, metrics, *, teacher, settings: MetricSettings, num_samples=None) -> dict:
        return evaluate_generator(model, dataset, metrics, num_samples=num_samples,
                                  inception_weights=settings.inception_weights, device=settings.device)  # fmt: skip

    def sample_grid(self, model: nn.Module, dataset: Dataset, device) -> Tensor:
        return sample_generator(model, 64, seed=GRID_SEED, device=device)

    @classmethod
    def accepts(cls, model: nn.Module, item: tuple) -> bool:
        return hasattr(model, "nz")


@register("image2image")
class Image2ImageTask(Task):
    """Input images → output images, trained on (input, target) pairs (super-resolution, pix2pix). A
    conditional discriminator sees the input and the image concatenated along channels (pix2pix's
    PatchGAN: in_channels = input channels + output channels); an input smaller than the image (super-
    resolution) is upsampled bilinearly to the image's size first."""

    output = "image"
    batch_fields = ("inputs", "targets")
    batch_format = "(inputs, targets) with targets None when no term compares with targets"
    default_terms = {"ground_truth": 1.0}

    def split(self, inputs: Tensor, targets: Tensor | None) -> TaskBatch:
        return TaskBatch(inputs=(inputs,), target=targets, condition=inputs)

    def from_data(self, items: tuple[Tensor, ...], model: nn.Module, draw_noise: NoiseSource) -> tuple:
        return items[0], items[1]

    def real_images(self, items: tuple[Tensor, ...]) -> Tensor:
        return items[1]

    def discriminator_inputs(self, images: Tensor, condition: Tensor | None) -> tuple[Tensor, ...]:
        if condition.dim() != 4 or condition.shape[0] != images.shape[0]:
            raise ValueError(
                "a conditional image2image discriminator sees inputs and images concatenated along channels: they "
                f"need one batch size, got inputs {tuple(condition.shape)} and images {tuple(images.shape)}"
            )
        if condition.shape[2:] != images.shape[2:]:  # super-resolution: the input, upsampled to the image's size
            condition = F.interpolate(condition.float(), size=images.shape[2:], mode="bilinear", align_corners=False)
        return (torch.cat([condition.to(images.dtype), images], dim=1),)

    def default_metrics(self, dataset: Dataset, *, teacher: bool) -> list[str]:
        return ["psnr", "ssim"]

    def evidence(self) -> tuple[type, ...]:
        return (PairedImages, ImageSets)

    def evaluate(self, model, dataset, metrics, *, teacher, settings: MetricSettings, num_samples=None) -> dict:
        return evaluate_paired(model, dataset, metrics, lpips_net=settings.lpips_net,
                               lpips_weights=settings.lpips_weights, inception_weights=settings.inception_weights,
                               device=settings.device)  # fmt: skip

    @torch.no_grad()
    def sample_grid(self, model: nn.Module, dataset: Dataset, device) -> Tensor:
        # Three rows of eight: the inputs (resized to the outputs' size), the outputs, the targets.
        count = min(8, len(dataset))
        inputs, targets = (torch.stack(items) for items in zip(*[dataset[i] for i in range(count)], strict=True))
        outputs = eval_outputs(model, inputs, device)
        upsampled = shown_with(F.interpolate(inputs, size=targets.shape[-2:], mode="nearest"), outputs.shape[1])
        return torch.cat([upsampled, outputs, targets])

    @classmethod
    def accepts(cls, model: nn.Module, item: tuple) -> bool:
        return not hasattr(model, "nz") and isinstance(item[1], Tensor) and item[1].dim() == 3
