"""What a model costs: parameters, and multiply-accumulates of one forward counted by torch's FLOP counter."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode


def cost(model: nn.Module, *example_inputs: Tensor) -> dict[str, int]:
    """Parameters and MACs of one forward of `model` on `example_inputs` (the whole batch they hold).

    MACs are `torch.utils.flop_counter.FlopCounterMode`'s FLOPs / 2: they count convolutions, transposed
    convolutions, matrix products and attention, which dominate these models; normalization, activations,
    pooling and additions are not counted. The forward runs in eval mode under `torch.no_grad()` (BatchNorm
    running statistics are left untouched) and the model's mode is restored afterwards. Attention runs on
    torch's math path while counting (nn.MultiheadAttention's fast path off, scaled_dot_product_attention's math
    backend): the fused CPU kernels that eval mode would pick have no formula in the FLOP counter and counted 0,
    so CPU and meta-device counts differed. Meta-device models and inputs work and cost no compute.

    Returns:
        {"params": number of parameter elements (shared parameters once), "macs": MACs of the forward}
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    params = sum(parameter.numel() for parameter in model.parameters())
    counter = FlopCounterMode(display=False)
    was_training, fast_path = model.training, torch.backends.mha.get_fastpath_enabled()
    model.eval()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with counter, torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
            model(*example_inputs)
    finally:
        model.train(was_training)
        torch.backends.mha.set_fastpath_enabled(fast_path)
    return {"params": params, "macs": counter.get_total_flops() // 2}


def example_inputs(model: nn.Module, batch_size: int = 1, image_size: int | None = None) -> tuple[Tensor, ...]:
    """Inputs for one forward of `model` at its default size (or `image_size` where the size is free).

    gankd models provide their own `example_inputs`; any other model (e.g. from torchvision) gets RGB images
    `image_size` square, 224 by default.
    """
    if hasattr(model, "example_inputs"):
        return model.example_inputs(batch_size, image_size)
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    size = 224 if image_size is None else image_size
    generator = torch.Generator().manual_seed(0)
    return ((torch.rand(batch_size, 3, size, size, generator=generator) * 2 - 1).to(device),)
