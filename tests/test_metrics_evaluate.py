"""Proxy FD/KID on gankd's digits LeNet, and the evaluate_* API over generators, paired models, classifiers."""

import numpy as np
import pytest
import torch
from scipy import linalg

from gankd import data, models
from gankd.metrics import (
    MetricWeightsError,
    digits_fd_kid,
    evaluate_classifier,
    evaluate_generator,
    evaluate_images,
    evaluate_paired,
    proxy,
    sample_generator,
)


@pytest.fixture(scope="session")
def digit_sets(proxy_cache):
    test = data.build("digits", split="test")
    train = data.build("digits", split="train")
    real = torch.stack([test[i][0] for i in range(len(test))])
    other = torch.stack([train[i][0] for i in range(360)])
    return real, other


def test_proxy_classifier_is_accurate_and_cached(proxy_cache, monkeypatch):
    _, checkpoint = proxy.load_digits_lenet(proxy_cache)
    assert checkpoint["test_accuracy"] > 0.95
    monkeypatch.setenv("GANKD_CACHE", str(proxy_cache.parent))

    def must_not_train(*args, **kwargs):
        raise AssertionError("the cached classifier was retrained")

    monkeypatch.setattr(proxy, "train_digits_lenet", must_not_train)
    assert proxy.digits_lenet_path(0) == proxy_cache


def test_proxy_fd_is_zero_on_itself_and_grows_with_noise(proxy_cache, digit_sets, monkeypatch):
    monkeypatch.setenv("GANKD_CACHE", str(proxy_cache.parent))
    real, other = digit_sets
    generator = torch.Generator().manual_seed(0)
    noisy = (other + 0.6 * torch.randn(other.shape, generator=generator)).clamp(-1, 1)
    same, clean, degraded = (digits_fd_kid(x, real) for x in (real, other, noisy))
    assert abs(same["fd_digits"]) < 1e-6
    assert clean["fd_digits"] < degraded["fd_digits"] and clean["kid_digits"] < degraded["kid_digits"]
    assert degraded["comparable_with_published"] is False and degraded["samples_generated"] == 360


@pytest.mark.filterwarnings("ignore:Matrix is singular")
def test_proxy_fd_equals_an_independent_scipy_computation(proxy_cache, digit_sets, monkeypatch):
    monkeypatch.setenv("GANKD_CACHE", str(proxy_cache.parent))
    real, other = digit_sets
    model, _ = proxy.load_digits_lenet(proxy_cache)

    def features(images):  # the extractor's path: uint8 quantization, then back to [-1, 1]
        quantized = ((images.clamp(-1, 1) + 1) * 127.5).round() / 127.5 - 1
        with torch.no_grad():
            return model.features(quantized).double().numpy()

    a, b = features(other), features(real)
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = linalg.sqrtm(cov_a @ cov_b).real
    expected = float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * root))
    assert digits_fd_kid(other, real, kid=False)["fd_digits"] == pytest.approx(expected, rel=1e-3)


def test_few_samples_warn_and_kid_subset_adapts(proxy_cache, digit_sets, monkeypatch):
    monkeypatch.setenv("GANKD_CACHE", str(proxy_cache.parent))
    real, other = digit_sets
    with pytest.warns(UserWarning, match="rank-deficient"):
        result = digits_fd_kid(other[:20], real[:30])
    assert np.isfinite(result["kid_digits"])
    with pytest.raises(ValueError, match="at least 2 images"):
        digits_fd_kid(other[:1], real)


def test_evaluate_generator_on_digits(proxy_cache, monkeypatch):
    monkeypatch.setenv("GANKD_CACHE", str(proxy_cache.parent))
    torch.manual_seed(0)
    generator = models.build("dcgan_g", image_size=32, nz=16, ngf=8, channels=1, num_classes=10)
    reference = data.build("digits", split="test")
    result = evaluate_generator(generator, reference, num_samples=200)
    assert set(result["metrics"]) == {"fd_digits", "kid_digits"} and result["metrics"]["fd_digits"] > 0
    assert result["details"]["kid_digits"]["samples_generated"] == 200 and "torch-fidelity" in result["versions"]
    assert result["details"]["samples_generated"] == 200 and result["details"]["samples_reference"] == 359
    first, again = sample_generator(generator, 12, seed=3), sample_generator(generator, 12, seed=3)
    assert torch.equal(first, again) and first.shape == (12, 1, 32, 32)


def test_standard_metrics_without_weights_fail_clearly(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.delenv("GANKD_INCEPTION_WEIGHTS", raising=False)
    images = torch.rand(4, 1, 16, 16)
    with pytest.raises(MetricWeightsError, match="GANKD_INCEPTION_WEIGHTS"):
        evaluate_images(images, images, ["fid"])
    with pytest.raises(ValueError, match="unknown metric 'inception_score'; metrics for image sets must be among"):
        evaluate_images(images, images, ["inception_score"])
    with pytest.raises(ValueError, match="metric 'psnr' is not measured for image sets; valid: fd_digits, fid"):
        evaluate_images(images, images, ["psnr"])


def test_evaluate_paired_and_classifier():
    pairs = data.build("photos_sr", split="test", scale=4)
    subset = torch.utils.data.Subset(pairs, range(8))
    upsample = torch.nn.Upsample(scale_factor=4, mode="bicubic")
    result = evaluate_paired(upsample, subset)
    assert 15 < result["metrics"]["psnr"] < 60 and 0 < result["metrics"]["ssim"] <= 1
    assert result["details"]["samples"] == 8

    classifier = models.build("small_cnn", width=4, in_channels=1)
    digits = data.build("digits", split="test")
    scores = evaluate_classifier(classifier, digits, ["accuracy", "agreement"], teacher=classifier)
    assert 0 <= scores["metrics"]["accuracy"] <= 1 and scores["metrics"]["agreement"] == 1.0
    with pytest.raises(ValueError, match="needs a teacher"):
        evaluate_classifier(classifier, digits, ["agreement"])


def test_evaluations_leave_the_global_random_stream_where_it_was():
    # A user evaluating in the middle of their training must not move its random stream (data loaders draw a
    # base seed from it; a train-mode teacher's dropout draws too).
    pairs = torch.utils.data.Subset(data.build("photos_sr", split="test", scale=4), range(4))
    dropout = torch.nn.Sequential(torch.nn.Upsample(scale_factor=4, mode="bicubic"), torch.nn.Dropout(0.5))
    classifier = models.build("small_cnn", width=4, in_channels=1)
    digits = torch.utils.data.Subset(data.build("digits", split="test"), range(16))
    for evaluate in (lambda: evaluate_paired(dropout, pairs), lambda: evaluate_classifier(classifier, digits)):
        torch.manual_seed(0)
        expected = torch.rand(3)
        torch.manual_seed(0)
        evaluate()
        assert torch.equal(torch.rand(3), expected)
