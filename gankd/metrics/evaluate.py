"""Evaluate generators, paired image models, classifiers or image sets by metric names.

Each function gathers one kind of evidence (gankd.metrics.registry) and measures the named metrics on it.
Every result is a dict {"metrics": {name: value}, "details": {...}, "versions": {...}}: the details say how
many samples were used, which extractor and weights (hash) produced each number, and whether it is
comparable with published figures (standard FID/KID) or only with gankd's own proxy (fd_digits, kid_digits).
"""

import functools

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from .classification import predict_logits
from .registry import ImageSets, MetricSettings, PairedImages, Predictions, check_names, measure, needs_teacher


def keeps_random_state(function):
    """`function` run under a fork of torch's random generators (the CPU's, and the CUDA devices' once CUDA is in
    use): data loaders draw their base seed from the global generator, and a train-mode teacher's dropout draws
    too, so an evaluation in the middle of a user's training would otherwise move the training's random stream."""

    @functools.wraps(function)
    def forked(*args, **kwargs):
        devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
        with torch.random.fork_rng(devices=devices):
            return function(*args, **kwargs)

    return forked


def stack_images(dataset: Dataset, limit: int | None = None) -> Tensor:
    """The first image of each item (items are image tensors or tuples starting with one), stacked."""
    count = len(dataset) if limit is None else min(limit, len(dataset))
    items = [dataset[index] for index in range(count)]
    return torch.stack([item[0] if isinstance(item, (tuple, list)) else item for item in items])


@keeps_random_state
def evaluate_images(
    generated: Tensor, reference: Tensor, metrics=("fid", "kid"), *, inception_weights=None, device="cpu"
) -> dict:
    """Image-set metrics (standard fid/kid on local Inception weights, fd_digits/kid_digits, or any metric
    registered for ImageSets) between generated and reference images."""
    settings = MetricSettings(device=device, inception_weights=inception_weights)
    return measure(ImageSets(generated, reference), check_names(metrics, ImageSets, "image sets"), settings)


@torch.no_grad()
def sample_generator(generator: nn.Module, count: int, *, batch_size: int = 64, seed: int = 0, device="cpu") -> Tensor:
    """`count` images from a noise-to-image generator (with `nz`, and `num_classes` when conditional), as
    `generator_batches` draws them, concatenated on the CPU."""
    batches = generator_batches(generator, count, batch_size=batch_size, seed=seed, device=device)
    return torch.cat([images for images, _ in batches])


def generator_batches(generator: nn.Module, count: int, *, batch_size: int = 64, seed: int = 0, device="cpu"):
    """Batches `(images, labels)` of `count` images in all from a noise-to-image generator in eval mode (its mode
    restored after); labels None for an unconditional one.

    Noise comes from a generator seeded with `seed`; a conditional generator gets labels cycling through
    its classes, so every class is equally represented. Images return on the CPU as float32.
    """
    noise_dims = getattr(generator, "nz", None)
    if noise_dims is None:
        raise ValueError(f"{type(generator).__name__} has no `nz`: sampling needs a noise-to-image generator")
    num_classes = getattr(generator, "num_classes", 0)
    rng = torch.Generator().manual_seed(seed)
    was_training = generator.training
    generator.eval()
    try:
        for start in range(0, count, batch_size):
            size = min(batch_size, count - start)
            noise = torch.randn(size, noise_dims, generator=rng).to(device)
            labels = (torch.arange(start, start + size) % num_classes) if num_classes else None
            with torch.no_grad():
                images = generator(noise, labels.to(device)) if labels is not None else generator(noise)
            yield images.float().cpu(), labels
    finally:
        generator.train(was_training)


@keeps_random_state
def evaluate_generator(
    generator: nn.Module,
    reference: Dataset,
    metrics=("fd_digits", "kid_digits"),
    *,
    num_samples: int | None = None,
    seed: int = 0,
    inception_weights=None,
    device="cpu",
) -> dict:
    """Image-set metrics of `generator`'s samples against the images of `reference` (as many samples as
    reference images unless `num_samples` is given)."""
    names = check_names(metrics, ImageSets, "generators")
    real = stack_images(reference)
    fake = sample_generator(generator, num_samples or len(real), seed=seed, device=device)
    return evaluate_images(fake, real, names, inception_weights=inception_weights, device=device)


@keeps_random_state
@torch.no_grad()
def translate(model: nn.Module, dataset: Dataset, *, batch_size: int = 32, device="cpu") -> tuple[Tensor, Tensor]:
    """(model(input) clamped to [-1, 1], target) over a paired data set, in eval mode, on the CPU."""
    was_training = model.training
    model.eval()
    outputs, targets = [], []
    try:
        for inputs, batch_targets in DataLoader(dataset, batch_size=batch_size):
            outputs.append(model(inputs.to(device)).float().cpu().clamp(-1, 1))
            targets.append(batch_targets.float())
    finally:
        model.train(was_training)
    return torch.cat(outputs), torch.cat(targets)


@keeps_random_state
def evaluate_paired(
    model: nn.Module,
    dataset: Dataset,
    metrics=("psnr", "ssim"),
    *,
    lpips_net: str = "alex",
    lpips_weights=None,
    inception_weights=None,
    batch_size: int = 32,
    device="cpu",
) -> dict:
    """Metrics of model(input) against the targets of a paired data set: pair metrics (psnr, ssim, lpips on
    local weights) and image-set metrics (fid, kid: outputs against targets as distributions)."""
    names = check_names(metrics, (PairedImages, ImageSets), "paired data")
    prediction, target = translate(model, dataset, batch_size=batch_size, device=device)
    settings = MetricSettings(device, inception_weights, lpips_net, lpips_weights)
    return measure([PairedImages(prediction, target), ImageSets(prediction, target)], names, settings)


@keeps_random_state
def evaluate_classifier(
    model: nn.Module,
    dataset: Dataset,
    metrics=("accuracy",),
    *,
    teacher: nn.Module | None = None,
    batch_size: int = 256,
    device="cpu",
) -> dict:
    """Top-1 accuracy on `dataset`'s labels and, with a teacher, the fraction of agreeing predictions."""
    names = check_names(metrics, Predictions, "classifiers")
    loader = DataLoader(dataset, batch_size=batch_size)
    logits, labels = predict_logits(model, loader, device)
    teacher_logits = (
        predict_logits(teacher, loader, device)[0] if teacher is not None and needs_teacher(names) else None
    )
    return measure(Predictions(logits, labels, teacher_logits), names, MetricSettings(device=device))
