"""LPIPS as a training loss: differentiable in its inputs, the network frozen and kept out of state dicts."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from gankd.metrics.perceptual import load_lpips, lpips_inputs


class LPIPSLoss(nn.Module):
    """Mean LPIPS distance (Zhang et al., v0.1) between two image batches, as a loss to minimise.

    Uses the standard network from `gankd.metrics.perceptual.load_lpips`: lpips' linear heads and the
    torchvision backbone from a verified local file (`weights_path`, else $GANKD_LPIPS_BACKBONE, else the
    torch hub cache). Missing or wrong weights raise `gankd.metrics.MetricWeightsError` at construction.
    The network is frozen (eval mode, no parameter gradients) and shared with the metrics, so it is not a
    submodule: it holds no state here and is loaded once per device. Gradients flow to the inputs.

    `forward(prediction, target)` takes images [N, 1 or 3, H, W] in [-1, 1] of one shape; grayscale is
    repeated to three channels and images below 32 px are upsampled for AlexNet. Returns a float32 scalar.
    """

    def __init__(
        self, net: str = "alex", weights_path: str | Path | None = None, *, device: torch.device | str = "cpu"
    ):
        super().__init__()
        self.net, self.weights_path = net, weights_path
        self._networks: dict[torch.device, nn.Module] = {}
        self._network(torch.device(device))  # fails now, not at the first step, when the weights are missing

    def _network(self, device: torch.device) -> nn.Module:
        if device not in self._networks:
            self._networks[device] = load_lpips(self.net, self.weights_path, device)
        return self._networks[device]

    def forward(self, prediction: Tensor, target: Tensor) -> Tensor:
        if prediction.shape != target.shape or prediction.dim() != 4 or prediction.shape[1] not in (1, 3):
            raise ValueError(
                f"LPIPS compares images [N, 1 or 3, H, W] of one shape, got {tuple(prediction.shape)} and "
                f"{tuple(target.shape)}"
            )
        network = self._network(prediction.device)
        pair = [lpips_inputs(images.float(), self.net) for images in (prediction, target)]
        return network(*pair).float().mean()

    def extra_repr(self) -> str:
        return f"net={self.net!r}, weights_path={self.weights_path!r}"
