"""LPIPS as a metric: the distance per image pair, on the verified network of gankd.losses.perceptual."""

from pathlib import Path

import torch
from torch import Tensor

from gankd.losses.perceptual import check_image_pair, load_lpips, lpips_inputs

from .registry import MetricSettings, PairedImages, register_metric


def lpips_distance(
    prediction: Tensor,
    target: Tensor,
    *,
    net: str = "alex",
    weights_path: str | Path | None = None,
    batch_size: int = 64,
) -> Tensor:
    """LPIPS distance per image pair, [N] float32 (lower is more similar)."""
    check_image_pair(prediction, target)
    model = load_lpips(net, weights_path, prediction.device)
    distances = []
    with torch.no_grad():
        for start in range(0, prediction.shape[0], batch_size):
            pair = [lpips_inputs(x[start : start + batch_size].float(), net) for x in (prediction, target)]
            distances.append(model(*pair).flatten())
    return torch.cat(distances)


@register_metric("lpips", evidence=PairedImages)
def _lpips_metric(evidence: PairedImages, names: list[str], settings: MetricSettings) -> tuple[dict, dict]:
    """Mean LPIPS distance over the image pairs (standard network on verified local weights)."""
    distance = lpips_distance(evidence.prediction, evidence.target, net=settings.lpips_net,
                              weights_path=settings.lpips_weights)  # fmt: skip
    return {"lpips": distance.mean().item()}, {"network": f"lpips v0.1, {settings.lpips_net} backbone"}
