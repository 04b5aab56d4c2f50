"""gankd.losses.AdaptedFeatureLoss: the adapter module around gankd.kernels.adapted_feature_match."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gankd.losses import AdaptedFeatureLoss


@pytest.mark.parametrize("bias", [True, False])
def test_initialised_and_stored_like_a_1x1_conv(bias):
    torch.manual_seed(0)
    conv = nn.Conv2d(24, 40, 1, bias=bias)
    torch.manual_seed(0)
    criterion = AdaptedFeatureLoss(24, 40, bias=bias)
    assert criterion.weight.shape == (40, 24, 1, 1)
    assert torch.equal(criterion.weight, conv.weight)
    if bias:
        assert torch.equal(criterion.bias, conv.bias)
    else:
        assert criterion.bias is None
    # The same state dict keys and shapes: a trained adapter loads into nn.Conv2d (and back).
    torch.manual_seed(1)
    other = nn.Conv2d(24, 40, 1, bias=bias)
    other.load_state_dict(criterion.state_dict())
    assert torch.equal(other.weight, criterion.weight)


@pytest.mark.parametrize(
    "kind, reduction, torch_loss",
    [("mse", "mean", F.mse_loss), ("l1", "sum", F.l1_loss), ("mse", "none", F.mse_loss)],
)
def test_equals_conv1x1_then_torch_loss(kind, reduction, torch_loss, device):
    # The module on the kernel path (the interpreter on CPU) against nn.Conv2d + torch's own loss, with
    # the same parameters: value and the gradients of student and adapter.
    torch.manual_seed(2)
    criterion = AdaptedFeatureLoss(5, 9, kind=kind, reduction=reduction, impl="triton").to(device)
    conv = nn.Conv2d(5, 9, 1).to(device)
    conv.load_state_dict(criterion.state_dict())
    student = torch.randn(2, 5, 4, 3, device=device, requires_grad=True)
    teacher = torch.randn(2, 9, 4, 3, device=device)
    loss = criterion(student, teacher)
    expected = torch_loss(conv(student), teacher, reduction=reduction)
    assert loss.shape == expected.shape
    assert torch.allclose(loss, expected, rtol=1e-5, atol=1e-6)
    upstream = torch.rand_like(expected) + 0.5
    (grad_s, grad_w, grad_b) = torch.autograd.grad((loss * upstream).sum(), (student, criterion.weight, criterion.bias))
    expected_grads = torch.autograd.grad((expected * upstream).sum(), (student, conv.weight, conv.bias))
    for got, want in zip((grad_s, grad_w, grad_b), expected_grads, strict=True):
        assert torch.allclose(got, want, rtol=1e-5, atol=1e-6)


def test_low_precision_parameters_and_repr(device):
    criterion = AdaptedFeatureLoss(3, 4, kind="l1", device=device, dtype=torch.bfloat16)
    assert criterion.weight.dtype == torch.bfloat16 and criterion.bias.device.type == device.type
    student = torch.randn(2, 3, 5, device=device, dtype=torch.bfloat16, requires_grad=True)
    loss = criterion(student, torch.randn(2, 4, 5, device=device, dtype=torch.bfloat16))
    loss.backward()
    assert loss.dtype == torch.float32 and criterion.weight.grad.dtype == torch.bfloat16
    assert repr(criterion) == "AdaptedFeatureLoss(3, 4, bias=True, kind='l1', reduction='mean', impl='auto')"


@pytest.mark.parametrize(
    "arguments, message",
    [
        (dict(student_channels=0), "student_channels must be a positive int"),
        (dict(teacher_channels=2.0), "teacher_channels must be a positive int"),
        (dict(student_channels=True), "student_channels must be a positive int"),
        (dict(kind="cosine"), "kind must be one of"),
        (dict(reduction="batchmean"), "reduction must be one of"),
        (dict(impl="fast"), "impl must be one of"),
    ],
)
def test_rejects_bad_options_at_construction(arguments, message):
    with pytest.raises(ValueError, match=message):
        AdaptedFeatureLoss(**(dict(student_channels=4, teacher_channels=8) | arguments))


def test_rejects_maps_that_do_not_fit_the_adapter():
    criterion = AdaptedFeatureLoss(4, 8)
    with pytest.raises(ValueError, match=r"Cs = 6 channels"):
        criterion(torch.randn(2, 6, 3, 3), torch.randn(2, 8, 3, 3))
