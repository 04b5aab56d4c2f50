"""Helpers shared by the kernel tests: relative errors and loss-plus-gradients of a function."""

import pytest
import torch


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
