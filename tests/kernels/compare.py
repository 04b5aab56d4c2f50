"""Helpers shared by the kernel tests: relative errors, loss-plus-gradients of a function, the torch ops a call
makes."""

import pytest
import torch

# fp16 training scales its loss (GradScaler starts at 2^16): a mean over a large map otherwise gives
# gradients under fp16's smallest normal number (6e-5), even under its subnormals, in the kernels and in
# torch alike, and they compare as rounding noise. The fp16 tests of mean-reduced losses scale the same way.
FP16_LOSS_SCALE = 2.0**16
# TF32 products round their inputs to 10 mantissa bits: agreement to about 1e-3, not 1e-5.
TF32_TOL = 5e-3


def loss_scale(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The upstream gradient a mean-reduced loss gets in training at this dtype: GradScaler's for fp16, else 1."""
    return torch.tensor(FP16_LOSS_SCALE if dtype == torch.float16 else 1.0, device=device)


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """max |actual - expected| / max |expected| (NaN-aware: NaN anywhere gives inf)."""
    actual, expected = actual.double(), expected.double()
    if torch.isnan(actual).any() or torch.isnan(expected).any():
        return float("inf")
    scale = expected.abs().max().clamp(min=1e-12)
    return ((actual - expected).abs().max() / scale).item()


def loss_and_grads(fn, inputs: dict, upstream=None, **kwargs):
    """Call fn on fresh leaf copies of `inputs` (keeping which require grad); backward (loss * upstream).sum().

    Returns (loss, {name: grad or None}). With upstream=None a fixed pseudo-random upstream is drawn
    from the loss shape (the same for every fn called on the same shapes).
    """
    leaves = {name: value.detach().clone().requires_grad_(value.requires_grad) for name, value in inputs.items()}
    loss = fn(**leaves, **kwargs)
    if upstream is None:
        generator = torch.Generator().manual_seed(1234)
        upstream = (torch.rand(loss.shape, generator=generator) + 0.5).to(loss.device)
    (loss * upstream.to(loss.dtype)).sum().backward()
    return loss.detach(), {name: leaf.grad for name, leaf in leaves.items()}


def require_cuda(device: torch.device) -> None:
    """Skip unless the test runs compiled kernels on a CUDA device."""
    if device.type != "cuda":
        pytest.skip("needs a CUDA device (compiled Triton kernel)")


# Small torch ops that a fused loss's forward should leave to its kernels (each is a launch on a GPU).
ARITHMETIC_OPS = ("aten::full", "aten::fill_", "aten::mul", "aten::div", "aten::clamp", "aten::reciprocal", "aten::to",
                  "aten::_to_copy")  # fmt: skip


def torch_ops_called(profile) -> list[str]:
    """Names of the torch ops a profiled call made itself, not those inside other torch ops (a CPU sum's fill_)."""

    def inside_a_torch_op(event) -> bool:
        parent = event.cpu_parent
        while parent is not None and not parent.name.startswith("aten::"):
            parent = parent.cpu_parent
        return parent is not None

    return [event.name for event in profile.events() if not inside_a_torch_op(event)]
