"""Building blocks shared by the model families: normalization by name, spectral norm, example noise."""

from __future__ import annotations

import torch
from torch import nn

from gankd.options import check_choice

NORMS = ("batch", "instance", "none")


def norm_layer(norm: str, channels: int) -> nn.Module:
    """The normalization named by `norm`: BatchNorm2d, InstanceNorm2d (no affine, no running stats, as in
    pix2pix/CycleGAN) or Identity."""
    check_choice("norm", norm, NORMS)
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    if norm == "instance":
        return nn.InstanceNorm2d(channels)
    return nn.Identity()


def apply_spectral_norm(module: nn.Module) -> nn.Module:
    """Put spectral normalization on every conv, linear and embedding weight inside `module`.

    Uses the parametrization API, so module paths (the distillation taps) do not change."""
    for child in list(module.modules()):
        if isinstance(child, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, nn.Embedding)):
            nn.utils.parametrizations.spectral_norm(child)
    return module


def example_images(batch_size: int, channels: int, size: int, reference: nn.Module) -> torch.Tensor:
    """Seeded images in [-1, 1] on the device of `reference`'s parameters (CPU when it has none)."""
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(batch_size, channels, size, size, generator=generator) * 2 - 1
    return images.to(_device_of(reference))


def example_labels(batch_size: int, num_classes: int, reference: nn.Module) -> torch.Tensor:
    """Labels 0, 1, ..., cycling through the classes, on the device of `reference`."""
    return (torch.arange(batch_size) % num_classes).to(_device_of(reference))


def example_noise(batch_size: int, nz: int, reference: nn.Module) -> torch.Tensor:
    """Seeded standard normal noise [batch_size, nz] on the device of `reference`."""
    generator = torch.Generator().manual_seed(0)
    return torch.randn(batch_size, nz, generator=generator).to(_device_of(reference))


def _device_of(module: nn.Module) -> torch.device:
    parameter = next(module.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")
