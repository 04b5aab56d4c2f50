"""Task: what one kind of model does, in one class — its batches, the discriminator's condition, evaluation.

A task owns every fact that differs between generators, image-to-image models and classifiers:

- `unpack(batch)`: a batch in the task's format (see `batch_format`) → the model's inputs, the target and
  the condition a conditional discriminator also sees (TaskBatch);
- `from_data(items, model, draw_noise)`: a data-set batch → a batch in the task's format (the trainer);
- `real_images(items)`: the images a discriminator learns to call real;
- `discriminator_inputs(images, condition)`: a conditional discriminator's arguments;
- `output`: what the model returns ("image" or "logits"), which loss terms check they can compare;
- `default_terms`: the objective of a run without a teacher; `default_metrics`, `evaluate`, `sample_grid`.

Nothing outside the task classes compares task names.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from gankd.metrics import MetricSettings


@dataclass
class TaskBatch:
    """One batch as the models see it."""

    inputs: tuple[Tensor, ...]  # the model's forward arguments
    target: Tensor | None  # what the model should output (target images, labels), when the batch has it
    condition: Tensor | None  # what a conditional discriminator sees beside the images (labels, input images)


NoiseSource = Callable[[int], Tensor]  # draw_noise(dims) -> [batch, dims] noise for this batch's samples


class Task:
    """Base class of the registered tasks (see the module docstring). Subclasses set the class attributes
    and implement `split`, `from_data`, `real_images`, `evaluate` and `default_metrics`."""

    name: ClassVar[str] = ""
    output: ClassVar[str] = "image"  # "image" or "logits"
    batch_fields: ClassVar[tuple[str, str]] = ("inputs", "targets")  # the names of the batch pair's parts
    batch_format: ClassVar[str] = ""  # the batch pair in words, for error messages
    has_targets: ClassVar[bool] = True  # whether batches carry targets (images or labels) for terms to compare
    default_terms: ClassVar[dict[str, Any]] = {}  # loss terms of a run without a teacher
    compares_with_teacher: ClassVar[bool] = False  # whether its default metrics measure against the teacher
    # Whether it can train on items whose label is hidden (config.data.keep_unlabelled): only where labels are
    # targets alone, which the label terms skip there, and never inputs of a model.
    takes_unlabelled: ClassVar[bool] = False

    # -- batches ---------------------------------------------------------------------------------------------

    def unpack(self, batch: Any) -> TaskBatch:
        """Check a batch pair and split it into model inputs, target and condition."""
        if not isinstance(batch, (tuple, list)) or len(batch) != 2:
            raise TypeError(f"a {self.name!r} batch is a pair {self.batch_format}; got {describe(batch)}")
        first, second = batch
        if not isinstance(first, Tensor):
            raise TypeError(f"{self.batch_fields[0]} must be a tensor, got {describe(first)}")
        if second is not None and not isinstance(second, Tensor):
            raise TypeError(f"{self.batch_fields[1]} must be a tensor or None, got {describe(second)}")
        return self.split(first, second)

    def split(self, first: Tensor, second: Tensor | None) -> TaskBatch:
        raise NotImplementedError

    def from_data(self, items: tuple[Tensor, ...], model: nn.Module, draw_noise: NoiseSource) -> tuple:
        """A data-set batch (already on the device) as a batch pair of this task."""
        raise NotImplementedError

    def real_images(self, items: tuple[Tensor, ...]) -> Tensor | None:
        """The images of a data-set batch that a discriminator learns to call real (None: no GAN here)."""
        return None

    def discriminator_inputs(self, images: Tensor, condition: Tensor | None) -> tuple[Tensor, ...]:
        """The arguments of a conditional discriminator judging `images` under `condition`."""
        raise ValueError(f"task {self.name!r} has no conditional discriminator")

    def check_discriminator(self, discriminator: nn.Module, conditional: bool) -> None:
        """Raise when `discriminator` cannot be used with this task as configured (the default accepts it)."""

    # -- evaluation ------------------------------------------------------------------------------------------

    def default_metrics(self, dataset: Dataset, *, teacher: bool) -> list[str]:
        raise NotImplementedError

    def evidence(self) -> tuple[type, ...]:
        """The metric evidence kinds (gankd.metrics.registry) this task's evaluation produces."""
        raise NotImplementedError

    def evaluate(self, model: nn.Module, dataset: Dataset, metrics: list[str], *, teacher: nn.Module | None,
                 settings: MetricSettings, num_samples: int | None = None) -> dict:  # fmt: skip
        """The named metrics of `model` on `dataset` (see gankd.metrics.measure for the result)."""
        raise NotImplementedError

    def sample_grid(self, model: nn.Module, dataset: Dataset, device) -> Tensor | None:
        """Images in [-1, 1] for a sample grid of 8 columns, or None when the task has no images to show."""
        return None

    @classmethod
    def accepts(cls, model: nn.Module, item: tuple) -> bool:
        """Whether `model` with data items like `item` looks like this task (for `gankd eval` without --task);
        only a class that defines it is considered, so a subclass of a built-in task is chosen by name."""
        return False

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


@torch.no_grad()
def eval_outputs(model: nn.Module, inputs: Tensor, device) -> Tensor:
    """model(inputs) in eval mode (its mode restored after), as float32 in [-1, 1] on the CPU."""
    was_training = model.training
    model.eval()
    try:
        return model(inputs.to(device)).float().cpu().clamp(-1, 1)
    finally:
        model.train(was_training)


def shown_with(images: Tensor, channels: int) -> Tensor:
    """`images` with `channels` channels for a grid beside other images: as they are when they have that many,
    else their channel mean repeated (a grayscale input beside colour outputs)."""
    if images.shape[1] == channels:
        return images
    return images.mean(dim=1, keepdim=True).expand(-1, channels, -1, -1)


def describe(value: object) -> str:
    return f"tensor of shape {tuple(value.shape)}" if isinstance(value, Tensor) else type(value).__name__
