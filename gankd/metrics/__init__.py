"""Metrics: standard FID/KID and LPIPS on verified local weights, offline proxy FD/KID, paired image quality,
classifier accuracy and agreement, measured speed, and ONNX export. Nothing here downloads.

    from gankd.metrics import evaluate_generator, evaluate_paired, evaluate_classifier, evaluate_images

Metrics are registered by name with the evidence they read (`names()`, `register_metric`, `measure`).
"""

from gankd.weights import MetricWeightsError

# The metric modules register their metrics on import (fidelity, proxy, image_quality, perceptual, classification).
from .classification import teacher_agreement, top1_accuracy
from .evaluate import (
    evaluate_classifier,
    evaluate_generator,
    evaluate_images,
    evaluate_paired,
    generator_batches,
    sample_generator,
    stack_images,
)
from .export import export_onnx
from .fidelity import standard_fid_kid
from .image_quality import psnr, ssim
from .perceptual import lpips_distance
from .proxy import digits_fd_kid
from .registry import (
    ImageSets,
    MetricSettings,
    PairedImages,
    Predictions,
    check_names,
    measure,
    names,
    needs_teacher,
    register_metric,
    versions,
)
from .speed import measure_latency

__all__ = [
    "ImageSets",
    "MetricSettings",
    "MetricWeightsError",
    "PairedImages",
    "Predictions",
    "check_names",
    "digits_fd_kid",
    "evaluate_classifier",
    "evaluate_generator",
    "evaluate_images",
    "evaluate_paired",
    "export_onnx",
    "lpips_distance",
    "measure",
    "generator_batches",
    "measure_latency",
    "names",
    "needs_teacher",
    "psnr",
    "register_metric",
    "sample_generator",
    "ssim",
    "stack_images",
    "standard_fid_kid",
    "teacher_agreement",
    "top1_accuracy",
    "versions",
]
