"""FID and KID through torch-fidelity: standard (Inception, local weights) or on any registered extractor.

Images go in as float tensors [N, C, H, W] in [-1, 1] (gankd's convention) or uint8 [N, 3, H, W]; they are
quantized to uint8 and grayscale is repeated to three channels, as the community's FID code expects.
torch-fidelity's on-disk feature cache is always off: its key ignores the weights file.
"""

import os
import warnings
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import Dataset

from gankd.weights import INCEPTION_V3, resolve_weights, sha256_of

from .registry import ImageSets, MetricSettings, register_metric

INCEPTION_FEATURE_DIMS = 2048
MAX_KID_SUBSET = 1000


def to_uint8_rgb(images: Tensor) -> Tensor:
    """[N, C, H, W] float in [-1, 1] (C = 1 or 3) or uint8 -> uint8 [N, 3, H, W] on the CPU."""
    if not isinstance(images, Tensor) or images.dim() != 4 or images.shape[1] not in (1, 3):
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"images must be a tensor [N, 1 or 3, H, W], got {shape}")
    if images.dtype != torch.uint8:
        images = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return images.expand(-1, 3, -1, -1).contiguous().cpu()


class UInt8Images(Dataset):
    """A Dataset over uint8 images [N, 3, H, W], the input torch-fidelity's extractors take."""

    def __init__(self, images: Tensor):
        self.images = to_uint8_rgb(images)

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> Tensor:
        return self.images[index]


def fid_kid(
    generated: Tensor,
    reference: Tensor,
    *,
    extractor: str,
    weights_path: Path,
    feature_dims: int,
    fid: bool = True,
    kid: bool = True,
    device: torch.device | str = "cpu",
    batch_size: int = 64,
) -> dict[str, float]:
    """FID and/or KID between two image sets with a registered torch-fidelity extractor.

    KID's subset size adapts to the sample count (at most 1000); `kid_std`, the spread over torch-fidelity's
    subsets, is given only where a subset is smaller than the smaller set: otherwise every subset is that
    whole set and the spread is 0 by construction, not a measured precision. FID from fewer samples than
    feature dimensions is biased (rank-deficient covariance) and warns; fewer than 2 samples raise.
    """
    import torch_fidelity

    generated_set, reference_set = UInt8Images(generated), UInt8Images(reference)
    counts = (len(generated_set), len(reference_set))
    if min(counts) < 2:
        raise ValueError(f"FID/KID need at least 2 images per set, got {counts[0]} generated and {counts[1]} reference")
    if fid and min(counts) < feature_dims:
        warnings.warn(
            f"FID from {min(counts)} samples with {feature_dims}-dimensional features: the covariance is "
            "rank-deficient and the value is biased upward; compare only figures computed from equal sample counts",
            stacklevel=2,
        )
    subset_size = min(MAX_KID_SUBSET, *counts)
    values = torch_fidelity.calculate_metrics(
        input1=generated_set, input2=reference_set, fid=fid, kid=kid, feature_extractor=extractor,
        feature_extractor_weights_path=str(weights_path), kid_subset_size=subset_size,
        cuda=torch.device(device).type == "cuda", batch_size=batch_size, cache=False, verbose=False,
        save_cpu_ram=(os.cpu_count() or 1) < 4,  # no loader worker processes on small machines
    )  # fmt: skip
    result = {}
    if fid:
        result["fid"] = float(values["frechet_inception_distance"])
    if kid:
        result["kid"] = float(values["kernel_inception_distance_mean"])
        if subset_size < min(counts):
            result["kid_std"] = float(values["kernel_inception_distance_std"])
    return result


def standard_fid_kid(
    generated: Tensor,
    reference: Tensor,
    *,
    weights_path: str | Path | None = None,
    fid: bool = True,
    kid: bool = True,
    device: torch.device | str = "cpu",
) -> dict:
    """Standard FID/KID: torch-fidelity's inception-v3-compat (2048-d pool features) on verified local weights.

    The weights come from `weights_path`, else $GANKD_INCEPTION_WEIGHTS, else the torch hub cache; a missing
    or wrong file raises MetricWeightsError (never a download, never a fallback).
    """
    path = resolve_weights(INCEPTION_V3, weights_path)
    values = fid_kid(generated, reference, extractor="inception-v3-compat", weights_path=path,
                     feature_dims=INCEPTION_FEATURE_DIMS, fid=fid, kid=kid, device=device)  # fmt: skip
    return dict(values, extractor="inception-v3-compat", weights_sha256=sha256_of(path)[:16],
                samples_generated=int(generated.shape[0]), samples_reference=int(reference.shape[0]),
                comparable_with_published=True)  # fmt: skip


@register_metric("fid", "kid", evidence=ImageSets)
def _standard_metrics(evidence: ImageSets, names: list[str], settings: MetricSettings) -> tuple[dict, dict]:
    """Standard FID and KID (Inception on verified local weights); comparable with published figures."""
    values = standard_fid_kid(evidence.generated, evidence.reference, weights_path=settings.inception_weights,
                              fid="fid" in names, kid="kid" in names, device=settings.device)  # fmt: skip
    return {name: values[name] for name in names}, values
