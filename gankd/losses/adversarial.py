"""GAN losses on discriminator logits: non-saturating, hinge and least-squares, for both sides of the game."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

GAN_MODES = ("nonsaturating", "hinge", "lsgan")


class GANLoss:
    """The generator and discriminator losses of one GAN objective, on raw logits of any shape.

    With r = D(real) and f = D(fake) logits, each mean taken over all elements:

    - "nonsaturating" (Goodfellow et al. 2014, the -log D(fake) generator):
      generator mean(softplus(-f)); discriminator mean(softplus(-r)) + mean(softplus(f)).
    - "hinge" (Lim & Ye 2017; SN-GAN, BigGAN): generator -mean(f);
      discriminator mean(relu(1 - r)) + mean(relu(1 + f)).
    - "lsgan" (Mao et al. 2017, targets 1 for real and 0 for fake; pix2pix/CycleGAN/GAN Compression):
      generator mean((f - 1)^2); discriminator mean((r - 1)^2) + mean(f^2).

    The discriminator loss is the sum of its real and fake parts (no factor 1/2). Losses are float32
    scalars whatever the logits' dtype.
    """

    def __init__(self, mode: str = "nonsaturating"):
        if mode not in GAN_MODES:
            raise ValueError(f"GAN loss mode must be one of {', '.join(map(repr, GAN_MODES))}; got {mode!r}")
        self.mode = mode

    def generator(self, fake_logits: Tensor) -> Tensor:
        """The generator's loss given the discriminator's logits on generated images."""
        fake = _logits("fake_logits", fake_logits)
        if self.mode == "nonsaturating":
            return F.softplus(-fake).mean()
        if self.mode == "hinge":
            return -fake.mean()
        return (fake - 1).square().mean()

    def discriminator(self, real_logits: Tensor, fake_logits: Tensor) -> Tensor:
        """The discriminator's loss given its logits on real and on generated images (detach the latter)."""
        real, fake = _logits("real_logits", real_logits), _logits("fake_logits", fake_logits)
        if self.mode == "nonsaturating":
            return F.softplus(-real).mean() + F.softplus(fake).mean()
        if self.mode == "hinge":
            return F.relu(1 - real).mean() + F.relu(1 + fake).mean()
        return (real - 1).square().mean() + fake.square().mean()

    def __repr__(self) -> str:
        return f"GANLoss({self.mode!r})"


def _logits(name: str, value: object) -> Tensor:
    if not isinstance(value, Tensor) or not value.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor of discriminator logits, got {type(value).__name__}")
    if value.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(value.shape)})")
    return value.float()
