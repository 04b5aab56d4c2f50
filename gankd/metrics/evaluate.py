"""Evaluate generators, paired image models, classifiers or image sets by metric names.

Every result is a dict {"metrics": {name: value}, "details": {...}, "versions": {...}}: the details say how
many samples were used, which extractor and weights (hash) produced each number, and whether it is
comparable with published figures (standard FID/KID) or only with gankd's own proxy (fd_digits, kid_digits).
"""

from importlib import metadata

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from .classification import predict_logits, teacher_agreement, top1_accuracy
from .fidelity import standard_fid_kid
from .image_quality import psnr, ssim
from .perceptual import lpips_distance
from .proxy import digits_fd_kid

GENERATION_METRICS = ("fid", "kid", "fd_digits", "kid_digits")
PAIRED_METRICS = ("psnr", "ssim", "lpips")
CLASSIFIER_METRICS = ("accuracy", "agreement")


def versions() -> dict[str, str]:
    """Versions of the libraries a metric depends on."""
    found = {}
    for package in ("gankd", "torch", "torchvision", "torch-fidelity", "lpips", "numpy"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


def _check_names(metrics, valid: tuple[str, ...], what: str) -> list[str]:
    names = [metrics] if isinstance(metrics, str) else list(metrics)
    unknown = [name for name in names if name not in valid]
    if unknown or not names:
        raise ValueError(f"metrics for {what} must be among {valid}, got {names}")
    return names


def stack_images(dataset: Dataset, limit: int | None = None) -> Tensor:
    """The first image of each item (items are image tensors or tuples starting with one), stacked."""
    count = len(dataset) if limit is None else min(limit, len(dataset))
    items = [dataset[index] for index in range(count)]
    return torch.stack([item[0] if isinstance(item, (tuple, list)) else item for item in items])


def evaluate_images(
    generated: Tensor, reference: Tensor, metrics=("fid", "kid"), *, inception_weights=None, device="cpu"
) -> dict:
    """FID/KID (standard, Inception on local weights) and/or fd_digits/kid_digits between two image sets."""
    names = _check_names(metrics, GENERATION_METRICS, "image sets")
    result = {"metrics": {}, "details": {}, "versions": versions()}
    if {"fid", "kid"} & set(names):
        values = standard_fid_kid(generated, reference, weights_path=inception_weights, fid="fid" in names,
                                  kid="kid" in names, device=device)  # fmt: skip
        result["details"]["standard"] = values
        result["metrics"].update({name: values[name] for name in ("fid", "kid") if name in names})
    if {"fd_digits", "kid_digits"} & set(names):
        values = digits_fd_kid(generated, reference, fid="fd_digits" in names, kid="kid_digits" in names,
                               device=device)  # fmt: skip
        result["details"]["proxy"] = values
        result["metrics"].update({name: values[name] for name in ("fd_digits", "kid_digits") if name in names})
    return result


@torch.no_grad()
def sample_generator(generator: nn.Module, count: int, *, batch_size: int = 64, seed: int = 0, device="cpu") -> Tensor:
    """`count` images from a noise-to-image generator (with `nz`, and `num_classes` when conditional).

    Noise comes from a generator seeded with `seed`; a conditional generator gets labels cycling through
    its classes, so every class is equally represented. Images return on the CPU.
    """
    noise_dims = getattr(generator, "nz", None)
    if noise_dims is None:
        raise ValueError(f"{type(generator).__name__} has no `nz`: sample_generator needs a noise-to-image generator")
    num_classes = getattr(generator, "num_classes", 0)
    rng = torch.Generator().manual_seed(seed)
    was_training = generator.training
    generator.eval()
    images = []
    try:
        for start in range(0, count, batch_size):
            size = min(batch_size, count - start)
            noise = torch.randn(size, noise_dims, generator=rng).to(device)
            labels = (torch.arange(start, start + size) % num_classes).to(device) if num_classes else None
            images.append((generator(noise, labels) if labels is not None else generator(noise)).float().cpu())
    finally:
        generator.train(was_training)
    return torch.cat(images)


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
    """Generation metrics of `generator`'s samples against the images of `reference` (as many samples as
    reference images unless `num_samples` is given)."""
    real = stack_images(reference)
    fake = sample_generator(generator, num_samples or len(real), seed=seed, device=device)
    return evaluate_images(fake, real, metrics, inception_weights=inception_weights, device=device)


@torch.no_grad()
def evaluate_paired(
    model: nn.Module,
    dataset: Dataset,
    metrics=("psnr", "ssim"),
    *,
    lpips_net: str = "alex",
    lpips_weights=None,
    batch_size: int = 32,
    device="cpu",
) -> dict:
    """PSNR/SSIM (and LPIPS when asked, on local weights) of model(input) against the targets of a paired set."""
    names = _check_names(metrics, PAIRED_METRICS, "paired data")
    was_training = model.training
    model.eval()
    outputs, targets = [], []
    try:
        for inputs, batch_targets in DataLoader(dataset, batch_size=batch_size):
            outputs.append(model(inputs.to(device)).float().cpu().clamp(-1, 1))
            targets.append(batch_targets.float())
    finally:
        model.train(was_training)
    prediction, target = torch.cat(outputs), torch.cat(targets)
    values = {}
    if "psnr" in names:
        values["psnr"] = psnr(prediction, target).mean().item()
    if "ssim" in names:
        values["ssim"] = ssim(prediction, target).mean().item()
    if "lpips" in names:
        values["lpips"] = lpips_distance(prediction, target, net=lpips_net, weights_path=lpips_weights).mean().item()
    details = {"samples": len(prediction), "data_range": 2.0}
    if "lpips" in names:
        details["lpips"] = f"lpips v0.1, {lpips_net} backbone"
    return {"metrics": values, "details": details, "versions": versions()}


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
    names = _check_names(metrics, CLASSIFIER_METRICS, "classifiers")
    if "agreement" in names and teacher is None:
        raise ValueError("metric 'agreement' needs a teacher model")
    loader = DataLoader(dataset, batch_size=batch_size)
    logits, labels = predict_logits(model, loader, device)
    values = {}
    if "accuracy" in names:
        values["accuracy"] = top1_accuracy(logits, labels)
    if "agreement" in names:
        values["agreement"] = teacher_agreement(logits, predict_logits(teacher, loader, device)[0])
    return {"metrics": values, "details": {"samples": len(labels)}, "versions": versions()}
