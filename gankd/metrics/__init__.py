"""Metrics: standard FID/KID and LPIPS on verified local weights, paired image quality, classifier
agreement, measured speed, and ONNX export. Nothing here downloads."""
