"""The fused feature losses in an fp16 autocast training step with a GradScaler, against the references.

This is how fp16 training meets the losses: half-precision student features near their teacher's, a mean
over many elements, the loss scaled by 2^16 before backward. A gradient that underflows or overflows in the
kernels shows in the parameters' unscaled gradients (the kernels of 18aa8d7, which wrote slope / M in fp16
before the upstream multiply, fail here), or as an inf the GradScaler would skip the step for.
"""

import pytest
import torch
from compare import relative_error
from torch import nn

from gankd.kernels import adapted_feature_match, adapted_feature_match_ref, feature_match, feature_match_ref

NEAR = 1e-3  # how far the teacher's targets lie from the student's features: slopes ~ 2e-3, / 32768 elements
GRAD_TOL = 5e-3  # fp16 features and gradients: the two paths round differently in the last place


def loss(case: str, impl: str, features, adapter, target):
    if case == "adapted":
        if impl == "reference":
            return adapted_feature_match_ref(features, target, adapter.weight, adapter.bias)
        return adapted_feature_match(features, target, adapter.weight, adapter.bias, impl="triton")
    if impl == "reference":
        return feature_match_ref(features, target, kind=case)
    return feature_match(features, target, kind=case, impl="triton")


def unscaled_gradients(case: str, impl: str, device: torch.device) -> list[torch.Tensor]:
    """One fp16-autocast step of a small student towards targets NEAR its own features: the gradients of the
    parameters the loss reaches, unscaled by the GradScaler."""
    torch.manual_seed(0)
    student = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1)).to(device)
    adapter = nn.Conv2d(8, 16, 1).to(device)
    parameters = [*student.parameters(), *(adapter.parameters() if case == "adapted" else ())]
    optimizer = torch.optim.SGD(parameters, lr=0.1)
    scaler = torch.amp.GradScaler(device.type)
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(4, 3, 32, 32, generator=generator).to(device)
    with torch.autocast(device.type, dtype=torch.float16):
        features = student(images)  # fp16 [4, 8, 32, 32]
    with torch.no_grad():
        reached = adapter(features.float()) if case == "adapted" else features.float()
        target = (reached + NEAR * torch.randn(reached.shape, generator=generator).to(device)).half()
    scaler.scale(loss(case, impl, features, adapter, target)).backward()
    scaler.unscale_(optimizer)
    return [parameter.grad for parameter in parameters]


@pytest.mark.parametrize("case", ["mse", "l1", "cosine", "adapted"])
def test_fp16_autocast_gradients_match_the_reference(case, device):
    fused = unscaled_gradients(case, "triton", device)
    reference = unscaled_gradients(case, "reference", device)
    for number, (got, want) in enumerate(zip(fused, reference, strict=True)):
        assert want.abs().max() > 0 and got.isfinite().all(), number
        assert relative_error(got, want) <= GRAD_TOL, number
