"""LPIPS (Zhang et al., v0.1) through the lpips package: the verified network, and LPIPSLoss to train with it.

The small linear heads ship inside the lpips wheel; the AlexNet or VGG16 backbone is torchvision's ImageNet
file, found as in gankd.weights ($GANKD_LPIPS_BACKBONE, then the torch hub cache) and hash-checked. Inputs
are [N, C, H, W] in [-1, 1]; grayscale is repeated to three channels and images below 32 px are upsampled
for AlexNet, which cannot take them. gankd.metrics' `lpips` metric uses the same network.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gankd.options import check_choice
from gankd.weights import LPIPS_BACKBONES, resolve_weights

ALEXNET_MIN_SIZE = 32
_loaded: dict[tuple[str, str, str], nn.Module] = {}


def load_lpips(net: str = "alex", weights_path: str | Path | None = None, device: torch.device | str = "cpu"):
    """The lpips.LPIPS model with verified backbone weights, frozen in eval mode, cached per (net, file, device)."""
    check_choice("net", net, tuple(LPIPS_BACKBONES))
    path = resolve_weights(LPIPS_BACKBONES[net], weights_path)
    key = (net, str(path), str(device))
    if key in _loaded:
        return _loaded[key]
    import lpips
    import torchvision

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchvision's deprecation notes about lpips' `pretrained=` arguments
        model = lpips.LPIPS(net=net, pnet_rand=True, pretrained=True, verbose=False)
    _check_heads_loaded(model, net)
    backbone = {"alex": torchvision.models.alexnet, "vgg": torchvision.models.vgg16}[net](weights=None)
    backbone.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    # lpips' trunk keeps torchvision's feature layers in slices, each layer named by its index in `features`.
    for trunk_slice in model.net.children():
        for index, layer in trunk_slice.named_children():
            layer.load_state_dict(backbone.features[int(index)].state_dict())
    model = model.eval().requires_grad_(False).to(device)
    _loaded[key] = model
    return model


def _check_heads_loaded(model: nn.Module, net: str) -> None:
    # lpips loads its heads with strict=False: load them again strictly from the file it ships.
    import lpips

    heads_file = Path(lpips.__file__).parent / "weights" / "v0.1" / f"{net}.pth"
    heads = torch.load(heads_file, map_location="cpu", weights_only=True)
    missing = [name for name in heads if name not in model.state_dict()]
    if missing or not heads:
        raise RuntimeError(f"lpips' linear heads {heads_file} do not fit the model (missing {missing[:3]})")
    model.load_state_dict(heads, strict=False)


def lpips_inputs(images: Tensor, net: str) -> Tensor:
    """Images [N, 1 or 3, H, W] in [-1, 1] as `net` takes them: three channels, at least 32 px for AlexNet."""
    images = images.expand(-1, 3, -1, -1)
    if net == "alex" and min(images.shape[-2:]) < ALEXNET_MIN_SIZE:
        scale = ALEXNET_MIN_SIZE / min(images.shape[-2:])
        size = [max(ALEXNET_MIN_SIZE, round(side * scale)) for side in images.shape[-2:]]
        images = F.interpolate(images, size=size, mode="bilinear", align_corners=False)
    return images


def check_image_pair(prediction: Tensor, target: Tensor) -> None:
    """LPIPS compares images [N, 1 or 3, H, W] of one shape; ValueError naming both shapes otherwise."""
    if prediction.shape != target.shape or prediction.dim() != 4 or prediction.shape[1] not in (1, 3):
        raise ValueError(
            f"LPIPS compares images [N, 1 or 3, H, W] of one shape, got {tuple(prediction.shape)} and "
            f"{tuple(target.shape)}"
        )


class LPIPSLoss(nn.Module):
    """Mean LPIPS distance between two image batches, as a loss to minimise.

    Uses `load_lpips`: lpips' linear heads and the torchvision backbone from a verified local file
    (`weights_path`, else $GANKD_LPIPS_BACKBONE, else the torch hub cache). Missing or wrong weights raise
    `gankd.weights.MetricWeightsError` at construction. The network is frozen (eval mode, no parameter
    gradients) and shared with the metric, so it is not a submodule: it holds no state here and is loaded
    once per device. Gradients flow to the inputs.

    `forward(prediction, target)` takes images [N, 1 or 3, H, W] in [-1, 1] of one shape and returns a
    float32 scalar.
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
        check_image_pair(prediction, target)
        network = self._network(prediction.device)
        pair = [lpips_inputs(images.float(), self.net) for images in (prediction, target)]
        return network(*pair).float().mean()

    def extra_repr(self) -> str:
        return f"net={self.net!r}, weights_path={self.weights_path!r}"
