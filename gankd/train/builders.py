"""Objects built from a RunConfig: models, data, optimizers, schedules, samplers (the only place that does)."""

import math
from collections import Counter

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset, default_collate

from gankd import data, models
from gankd.config import ModelConfig, OptimConfig, RunConfig
from gankd.distill.terms.logits import NO_LABEL

from .distributed import Distributed
from .interrupts import ignore_in_worker

SCHEDULES = ("constant", "cosine", "linear")  # what build_schedule implements
LABEL_CHOICE_STREAM = 1  # the random stream of labelled_choice, after the run's seed


def build_model(config: ModelConfig, *, weights: str = "", weights_format: str = "gankd") -> nn.Module:
    """The model of `config` (with its input convention), loading the local file `weights` when given."""
    model = models.build(config.name, weights=weights or None, weights_format=weights_format, **config.options)
    convention = config.input
    return models.set_input_convention(model, mean=convention.mean, std=convention.std, size=convention.size)


def build_dataset(config: RunConfig, split: str, *, training: bool = False) -> Dataset:
    """The data set of `split`. With data.limit_per_class the train split is its labelled subset, or with
    data.keep_unlabelled every item, the others' labels hidden for `training` (evaluation sees their labels)."""
    options = dict(config.data.options)
    options.setdefault("seed", config.seed)
    dataset = data.build(config.data.name, split, **options)
    if split == "train" and config.data.limit_per_class > 0:
        if not config.data.keep_unlabelled:
            return LabelledSubset(dataset, config.data.limit_per_class, config.seed)
        if training:
            return PartlyLabelled(dataset, config.data.limit_per_class, config.seed)
    return dataset


def example_items(dataset: Dataset, seed: int, count: int = 16) -> tuple:
    """`count` items of `dataset` (a seeded choice), collated into one batch."""
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:count]
    return tuple(default_collate([dataset[int(index)] for index in order]))


def labelled_choice(dataset: Dataset, per_class: int, seed: int) -> list[int]:
    """The indices of `per_class` items of each class of a labelled data set, chosen in a seeded order."""
    labels = [dataset[index][1] for index in range(len(dataset))]
    if not all(isinstance(label, int) and label >= 0 for label in labels):
        raise ValueError("config.data.limit_per_class needs a data set whose items are (image, class label)")
    chosen, taken = [], Counter()
    # A stream of its own: the sampler shuffles with torch.randperm seeded by seed + epoch, and taking its
    # epoch-0 order here would put every labelled item first in that epoch's batches (data.keep_unlabelled).
    for index in np.random.default_rng([seed, LABEL_CHOICE_STREAM]).permutation(len(dataset)).tolist():
        if taken[labels[index]] < per_class:
            chosen.append(index)
            taken[labels[index]] += 1
    return sorted(chosen)


class _ForwardsEpoch:
    """Passes `set_epoch` on to the wrapped data set (`self.dataset`), so its augmentation follows epochs."""

    dataset: Dataset

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)


class LabelledSubset(_ForwardsEpoch, Subset):
    """`per_class` items of each class of a labelled data set (`labelled_choice`): a limited-label setting."""

    def __init__(self, dataset: Dataset, per_class: int, seed: int):
        super().__init__(dataset, labelled_choice(dataset, per_class, seed))


class PartlyLabelled(_ForwardsEpoch, Dataset):
    """Every item of a labelled data set, but only the `per_class` items of each class that LabelledSubset
    keeps have their label; the others carry NO_LABEL, which the label terms skip. A semi-supervised setting:
    the teacher's terms learn from every image, the label terms from the labelled ones."""

    def __init__(self, dataset: Dataset, per_class: int, seed: int):
        self.dataset = dataset
        self.labelled = frozenset(labelled_choice(dataset, per_class, seed))

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple:
        image, label = self.dataset[index]
        return image, label if index in self.labelled else NO_LABEL


def build_optimizer(parameters, config: OptimConfig) -> torch.optim.Optimizer:
    beta1, beta2 = config.betas
    return torch.optim.Adam(parameters, lr=config.lr, betas=(beta1, beta2), weight_decay=config.weight_decay)


def build_schedule(optimizer: torch.optim.Optimizer, config: OptimConfig, steps: int):
    """Linear warm-up, then one of SCHEDULES: constant, cosine or linear decay to 0 at `steps`."""

    def factor(step: int) -> float:
        if step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        progress = (step - config.warmup_steps) / max(1, steps - config.warmup_steps)
        if config.schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
        if config.schedule == "linear":
            return max(0.0, 1.0 - progress)
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class ResumableSampler(DistributedSampler):
    """DistributedSampler (this process's shard of a seeded shuffle per epoch) that can start mid-epoch.

    An epoch holds whole optimizer steps of `accumulate` batches each (the rest of the shard is dropped),
    so the samples of a step do not depend on how the step's batch is split across processes and
    micro-batches. `set_position(epoch, start_batch)` skips the first `start_batch` batches of that epoch
    without loading them, so a resumed run sees exactly the batches an uninterrupted run would.
    """

    def __init__(self, dataset: Dataset, batch_size: int, dist: Distributed, seed: int, accumulate: int = 1):
        super().__init__(dataset, num_replicas=dist.world_size, rank=dist.rank, shuffle=True, seed=seed,
                         drop_last=True)  # fmt: skip
        self.batch_size = batch_size
        self.start_batch = 0
        self.batches_per_epoch = self.num_samples // (batch_size * accumulate) * accumulate
        if self.batches_per_epoch == 0:
            raise ValueError(
                f"data.batch_size={batch_size} x optim.accumulate={accumulate} is larger than the "
                f"{self.num_samples} samples each of the {dist.world_size} process(es) gets per epoch: lower "
                "data.batch_size or optim.accumulate"
            )

    def set_position(self, epoch: int, start_batch: int) -> None:
        self.set_epoch(epoch)
        self.start_batch = start_batch

    def __iter__(self):
        indices = list(super().__iter__())[: self.batches_per_epoch * self.batch_size]
        return iter(indices[self.start_batch * self.batch_size :])

    def __len__(self) -> int:
        return (self.batches_per_epoch - self.start_batch) * self.batch_size


def step_positions(dist: Distributed, micro_batch: int, batch_size: int) -> torch.Tensor:
    """Where this process's samples of one micro-batch stand in the step's global batch (0 .. world ·
    accumulate · batch_size − 1): the sampler deals rank r every world-th sample of the step, so sample i of
    micro-batch m on rank r is the step's sample r + world · (m · batch_size + i)."""
    return dist.rank + dist.world_size * (micro_batch * batch_size + torch.arange(batch_size))


def batches(dataset: Dataset, config: RunConfig, dist: Distributed, start_step: int):
    """Endless steps from `start_step` on, each a list of optim.accumulate batches: epoch after epoch, data
    augmentation re-seeded per epoch."""
    accumulate = config.optim.accumulate
    sampler = ResumableSampler(dataset, config.data.batch_size, dist, config.seed, accumulate)
    # The loader's own generator keeps it from drawing worker seeds from the global RNG (resume exactness).
    loader = DataLoader(dataset, batch_size=config.data.batch_size, sampler=sampler, drop_last=True,
                        num_workers=config.data.num_workers,
                        worker_init_fn=ignore_in_worker if config.data.num_workers else None,
                        generator=torch.Generator().manual_seed(config.seed))  # fmt: skip
    epoch, start_batch = divmod(start_step * accumulate, sampler.batches_per_epoch)
    step = []
    while True:
        sampler.set_position(epoch, start_batch)
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(epoch)
        for batch in loader:
            step.append(batch)
            if len(step) == accumulate:
                yield step
                step = []
        epoch, start_batch = epoch + 1, 0
