"""gankd.losses.GANLoss: each mode's generator and discriminator losses against their formulas."""

import math

import pytest
import torch

from gankd.losses import GAN_MODES, GANLoss

REAL = torch.tensor([2.0, -1.0, 0.5])
FAKE = torch.tensor([-3.0, 0.0, 1.5, 4.0])


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


# Each mode's (generator, discriminator) loss written out element by element.
EXPECTED = {
    "nonsaturating": (
        mean(softplus(-f) for f in FAKE.tolist()),
        mean(softplus(-r) for r in REAL.tolist()) + mean(softplus(f) for f in FAKE.tolist()),
    ),
    "hinge": (
        -mean(FAKE.tolist()),
        mean(max(0.0, 1 - r) for r in REAL.tolist()) + mean(max(0.0, 1 + f) for f in FAKE.tolist()),
    ),
    "lsgan": (
        mean((f - 1) ** 2 for f in FAKE.tolist()),
        mean((r - 1) ** 2 for r in REAL.tolist()) + mean(f**2 for f in FAKE.tolist()),
    ),
}


@pytest.mark.parametrize("mode", GAN_MODES)
def test_gan_losses_match_their_formulas(mode):
    loss = GANLoss(mode)
    generator_loss, discriminator_loss = EXPECTED[mode]
    assert loss.generator(FAKE).item() == pytest.approx(generator_loss, rel=1e-6)
    assert loss.discriminator(REAL, FAKE).item() == pytest.approx(discriminator_loss, rel=1e-6)
    assert mode in repr(loss)


@pytest.mark.parametrize("mode", GAN_MODES)
def test_gan_losses_take_patch_logits_in_low_precision_and_return_float32(mode):
    # PatchGAN logits [N, 1, H, W] in bfloat16: the mean runs over every element, in float32.
    patch_fake = FAKE.reshape(2, 1, 1, 2).to(torch.bfloat16).requires_grad_()
    loss = GANLoss(mode)
    value = loss.generator(patch_fake)
    assert value.dtype == torch.float32 and value.shape == ()
    assert value.item() == pytest.approx(EXPECTED[mode][0], rel=1e-2)
    value.backward()
    assert patch_fake.grad is not None and patch_fake.grad.dtype == torch.bfloat16


def test_generator_gradient_pushes_fake_logits_towards_real():
    # Each generator loss decreases as the discriminator rates the fakes more real.
    for mode in GAN_MODES:
        fake = torch.zeros(5, requires_grad=True)
        GANLoss(mode).generator(fake).backward()
        assert torch.all(fake.grad < 0), mode


def test_gan_loss_rejects_bad_input():
    with pytest.raises(ValueError, match="'nonsaturating', 'hinge', 'lsgan'; got 'wgan'"):
        GANLoss("wgan")
    with pytest.raises(TypeError, match="fake_logits must be a floating-point tensor"):
        GANLoss("hinge").generator(torch.tensor([1, 2]))
    with pytest.raises(TypeError, match="real_logits"):
        GANLoss("lsgan").discriminator([1.0], FAKE)
    with pytest.raises(ValueError, match="fake_logits is empty"):
        GANLoss("hinge").discriminator(REAL, torch.zeros(0))
