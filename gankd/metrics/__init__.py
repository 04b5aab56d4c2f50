"""Metrics: standard FID/KID and LPIPS on verified local weights, offline proxy FD/KID, paired image quality,
classifier accuracy and agreement, measured speed, and ONNX export. Nothing here downloads.

    from gankd.metrics import evaluate_generator, evaluate_paired, evaluate_classifier, evaluate_images
"""

from .classification import teacher_agreement, top1_accuracy
from .evaluate import (
    CLASSIFIER_METRICS,
    GENERATION_METRICS,
    PAIRED_METRICS,
    evaluate_classifier,
    evaluate_generator,
    evaluate_images,
    evaluate_paired,
    sample_generator,
    versions,
)
from .export import export_onnx
from .fidelity import standard_fid_kid
from .image_quality import psnr, ssim
from .perceptual import lpips_distance
from .proxy import digits_fd_kid
from .speed import measure_latency
from .weights import MetricWeightsError

__all__ = [
    "CLASSIFIER_METRICS",
    "GENERATION_METRICS",
    "PAIRED_METRICS",
    "MetricWeightsError",
    "digits_fd_kid",
    "evaluate_classifier",
    "evaluate_generator",
    "evaluate_images",
    "evaluate_paired",
    "export_onnx",
    "lpips_distance",
    "measure_latency",
    "psnr",
    "sample_generator",
    "ssim",
    "standard_fid_kid",
    "teacher_agreement",
    "top1_accuracy",
    "versions",
]
