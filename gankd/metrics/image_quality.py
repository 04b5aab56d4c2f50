"""Paired image quality: PSNR and SSIM against ground truth, per image.

Images are [N, C, H, W] floats; `data_range` is the span of valid values (2.0 for gankd's [-1, 1] images).
SSIM follows Wang et al. (2004) with an 11×11 Gaussian window (σ = 1.5), K1 = 0.01, K2 = 0.03, averaged
over the positions where the window fits and over channels — the same numbers as scikit-image's
`structural_similarity(..., gaussian_weights=True, sigma=1.5, use_sample_covariance=False)`.
"""

import torch
import torch.nn.functional as F
from torch import Tensor

from .registry import MetricSettings, PairedImages, register_metric

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5


def _check_pair(prediction: Tensor, target: Tensor) -> None:
    if not isinstance(prediction, Tensor) or not isinstance(target, Tensor):
        raise TypeError("prediction and target must be torch.Tensors")
    if prediction.shape != target.shape or prediction.dim() != 4:
        raise ValueError(
            f"prediction and target must both be [N, C, H, W] of one shape, got {tuple(prediction.shape)} and "
            f"{tuple(target.shape)}"
        )


# Images per chunk: SSIM's float64 maps take about 70 MB per 256x256 colour image, so sets are done in chunks.
IMAGES_PER_CHUNK = 8


def psnr(prediction: Tensor, target: Tensor, data_range: float = 2.0) -> Tensor:
    """Peak signal-to-noise ratio in dB per image, [N] (inf for identical images)."""
    _check_pair(prediction, target)
    return _per_chunk(_psnr, prediction, target, data_range)


def ssim(prediction: Tensor, target: Tensor, data_range: float = 2.0) -> Tensor:
    """Structural similarity per image, [N], in float64 arithmetic."""
    _check_pair(prediction, target)
    if min(prediction.shape[-2:]) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW}, got {tuple(prediction.shape)}")
    return _per_chunk(_ssim, prediction, target, data_range)


def _per_chunk(measure, prediction: Tensor, target: Tensor, data_range: float) -> Tensor:
    """`measure` per image, IMAGES_PER_CHUNK images at a time (the same numbers, bounded memory)."""
    chunks = [measure(prediction[start : start + IMAGES_PER_CHUNK].double(),
                      target[start : start + IMAGES_PER_CHUNK].double(), data_range)
              for start in range(0, len(prediction), IMAGES_PER_CHUNK)]  # fmt: skip
    return torch.cat(chunks).float() if chunks else prediction.new_zeros(0)


def _psnr(x: Tensor, y: Tensor, data_range: float) -> Tensor:
    mse = (x - y).square().flatten(1).mean(1)
    return 10 * torch.log10(data_range**2 / mse)


def _gaussian_window(channels: int, device: torch.device) -> Tensor:
    coords = torch.arange(SSIM_WINDOW, dtype=torch.float64, device=device) - (SSIM_WINDOW - 1) / 2
    kernel = torch.exp(-(coords**2) / (2 * SSIM_SIGMA**2))
    kernel = kernel / kernel.sum()
    return (kernel[:, None] * kernel[None, :]).expand(channels, 1, SSIM_WINDOW, SSIM_WINDOW).contiguous()


def _ssim(x: Tensor, y: Tensor, data_range: float) -> Tensor:
    window = _gaussian_window(x.shape[1], x.device)

    def blur(image: Tensor) -> Tensor:
        return F.conv2d(image, window, groups=x.shape[1])

    mean_x, mean_y = blur(x), blur(y)
    var_x = blur(x * x) - mean_x**2
    var_y = blur(y * y) - mean_y**2
    cov = blur(x * y) - mean_x * mean_y
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    ssim_map = ((2 * mean_x * mean_y + c1) * (2 * cov + c2)) / ((mean_x**2 + mean_y**2 + c1) * (var_x + var_y + c2))
    return ssim_map.flatten(1).mean(1)


@register_metric("psnr", evidence=PairedImages)
def _psnr_metric(evidence: PairedImages, names: list[str], settings: MetricSettings) -> tuple[dict, dict]:
    """Mean PSNR (dB) over the image pairs."""
    return {"psnr": psnr(evidence.prediction, evidence.target).mean().item()}, {}


@register_metric("ssim", evidence=PairedImages)
def _ssim_metric(evidence: PairedImages, names: list[str], settings: MetricSettings) -> tuple[dict, dict]:
    """Mean SSIM over the image pairs."""
    return {"ssim": ssim(evidence.prediction, evidence.target).mean().item()}, {}
