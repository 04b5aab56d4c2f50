"""gankd.metrics: weights resolution, standard-metric plumbing, paired and classifier metrics, speed, export."""

import dataclasses
import hashlib
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
import torchvision

from gankd import weights
from gankd.metrics import export, fidelity, image_quality, perceptual
from gankd.metrics.classification import teacher_agreement, top1_accuracy
from gankd.metrics.export import export_onnx
from gankd.metrics.image_quality import psnr, ssim
from gankd.metrics.speed import measure_latency


def file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_missing_weights_name_the_file_and_where_to_put_it(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.delenv("GANKD_INCEPTION_WEIGHTS", raising=False)
    with pytest.raises(weights.MetricWeightsError) as error:
        weights.resolve_weights(weights.INCEPTION_V3)
    message = str(error.value)
    assert "weights-inception-2015-12-05-6726825d.pth" in message and "GANKD_INCEPTION_WEIGHTS" in message
    assert str(tmp_path / "hub" / "checkpoints") in message and "never downloads" in message


def test_resolution_order_and_hash_check(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cached = tmp_path / "hub" / "checkpoints" / "weights-inception-2015-12-05-6726825d.pth"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"not the inception weights")
    # A file at the right place with the wrong contents is rejected by its size, then by its hash.
    size_message = (r"it has 25 bytes, the published file 95,628,359\. Standard FID/KID \(torch-fidelity's "
                    r"inception-v3-compat\) needs exactly that file")  # fmt: skip
    with pytest.raises(weights.MetricWeightsError, match=size_message):
        weights.resolve_weights(weights.INCEPTION_V3)
    # A folder where the file should be, and where to give the path instead.
    folder_message = (r"points to \S+, which is a folder, not the file\. .* or give its path \(a run's "
                      r"eval\.inception_weights, gankd eval --inception-weights\)")  # fmt: skip
    with pytest.raises(weights.MetricWeightsError, match=folder_message):
        weights.resolve_weights(weights.INCEPTION_V3, tmp_path)
    unsized = dataclasses.replace(weights.INCEPTION_V3, size=None)
    with pytest.raises(weights.MetricWeightsError, match="its SHA-256 is [0-9a-f]{64}, the published file's is 6726"):
        weights.resolve_weights(unsized)
    # The whole SHA-256 counts, not the 8 hex digits in the file name.
    same_prefix = weights.WeightsFile(cached.name, file_hash(cached)[:8] + "0" * 56, "GANKD_TEST_WEIGHTS", "a test")
    with pytest.raises(weights.MetricWeightsError, match="its SHA-256 is"):
        weights.resolve_weights(same_prefix)
    # The same rules with the hash of a file we made: hub cache, then the variable, then an explicit path.
    other = tmp_path / "elsewhere.pth"
    other.write_bytes(b"not the inception weights")
    spec = weights.WeightsFile(cached.name, file_hash(cached), "GANKD_TEST_WEIGHTS", "a test", size=25)
    assert weights.resolve_weights(spec) == cached
    monkeypatch.setenv("GANKD_TEST_WEIGHTS", str(other))
    assert weights.resolve_weights(spec) == other
    explicit = tmp_path / "explicit.pth"
    explicit.write_bytes(b"something else")
    with pytest.raises(weights.MetricWeightsError, match="from the path given"):
        weights.resolve_weights(spec, explicit)


def random_inception_state_dict(path: Path) -> Path:
    """A state dict with Inception's exact keys and random values: for plumbing tests only."""
    import torch_fidelity.feature_extractor_inceptionv3 as inception

    with mock.patch.object(inception.torch, "load", return_value={}), \
            mock.patch.object(torch.nn.Module, "load_state_dict", return_value=None):  # fmt: skip
        model = inception.FeatureExtractorInceptionV3("probe", ["2048"], feature_extractor_weights_path="unused")
    torch.save(model.state_dict(), path)
    return path


def test_standard_fid_kid_plumbing_with_random_inception_weights(monkeypatch, tmp_path):
    # Plumbing only: random weights with Inception's keys. The hash check rejects them; with the check
    # pointed at their own hash the whole path runs through torch-fidelity and records what it measured.
    fake_weights = random_inception_state_dict(tmp_path / "random-inception.pth")
    images = torch.rand(4, 1, 16, 16) * 2 - 1
    with pytest.raises(weights.MetricWeightsError, match="6726825d"):
        fidelity.standard_fid_kid(images, images, weights_path=fake_weights)
    spec = weights.WeightsFile(weights.INCEPTION_V3.filename, file_hash(fake_weights), "X", "plumbing test")
    monkeypatch.setattr(fidelity, "INCEPTION_V3", spec)
    with pytest.warns(UserWarning, match="rank-deficient"):
        result = fidelity.standard_fid_kid(images, torch.rand(4, 3, 16, 16) * 2 - 1, weights_path=fake_weights)
    assert np.isfinite(result["fid"]) and np.isfinite(result["kid"])
    assert "kid_std" not in result  # every KID subset is the whole set of 4: no spread to report
    assert result["samples_generated"] == 4 and result["extractor"] == "inception-v3-compat"
    monkeypatch.setattr(fidelity, "MAX_KID_SUBSET", 2)  # subsets of 2 of the 4 images do spread
    result = fidelity.standard_fid_kid(images, torch.rand(4, 3, 16, 16) * 2 - 1, weights_path=fake_weights, fid=False)
    assert "kid_std" in result and result["kid_std"] >= 0
    assert result["weights_sha256"].startswith(spec.sha256_prefix)


def test_to_uint8_rgb_quantizes_and_repeats_gray():
    images = torch.tensor([-1.0, 0.0, 1.0]).reshape(1, 1, 1, 3)
    out = fidelity.to_uint8_rgb(images)
    assert out.dtype == torch.uint8 and out.shape == (1, 3, 1, 3)
    assert out[0, :, 0].tolist() == [[0, 128, 255]] * 3
    with pytest.raises(ValueError, match="images must be a tensor"):
        fidelity.to_uint8_rgb(torch.rand(2, 2, 4, 4))


def test_lpips_plumbing_with_random_backbone(monkeypatch, tmp_path):
    backbone = tmp_path / "random-alexnet.pth"
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), backbone)
    images = torch.rand(3, 1, 16, 16) * 2 - 1  # gray and below AlexNet's 32 px: repeated and upsampled
    with pytest.raises(weights.MetricWeightsError, match="7be5be79"):
        perceptual.lpips_distance(images, images, weights_path=backbone)
    spec = weights.WeightsFile("alexnet-owt-7be5be79.pth", file_hash(backbone), "X", "plumbing test")
    monkeypatch.setitem(weights.LPIPS_BACKBONES, "alex", spec)
    same = perceptual.lpips_distance(images, images.clone(), weights_path=backbone)
    different = perceptual.lpips_distance(images, torch.rand(3, 1, 16, 16) * 2 - 1, weights_path=backbone)
    assert same.shape == (3,) and torch.all(same == 0) and torch.all(different > 0)
    with pytest.raises(ValueError, match="net must be one of"):
        perceptual.lpips_distance(images, images, net="squeezenet")


def test_psnr_and_ssim_agree_with_scikit_image():
    metrics = pytest.importorskip("skimage.metrics")
    torch.manual_seed(0)
    clean = torch.rand(2, 3, 24, 30) * 2 - 1
    noisy = (clean + 0.1 * torch.randn_like(clean)).clamp(-1, 1)
    for i in range(2):
        a, b = clean[i].numpy(), noisy[i].numpy()
        expected_ssim = metrics.structural_similarity(a, b, channel_axis=0, data_range=2.0, gaussian_weights=True,
                                                      sigma=1.5, use_sample_covariance=False)  # fmt: skip
        assert ssim(noisy, clean)[i].item() == pytest.approx(expected_ssim, abs=1e-5)
        assert psnr(noisy, clean)[i].item() == pytest.approx(metrics.peak_signal_noise_ratio(a, b, data_range=2.0))
    assert torch.isinf(psnr(clean, clean)).all() and torch.allclose(ssim(clean, clean), torch.ones(2))
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(clean[..., :8, :8], clean[..., :8, :8])


def test_psnr_and_ssim_work_through_large_sets_in_chunks(monkeypatch):
    # SSIM's float64 maps of a whole validation set at once took gigabytes; chunks give the same numbers.
    torch.manual_seed(0)
    clean = torch.rand(19, 3, 16, 16) * 2 - 1
    noisy = (clean + 0.1 * torch.randn_like(clean)).clamp(-1, 1)
    one_by_one = torch.cat([ssim(noisy[i : i + 1], clean[i : i + 1]) for i in range(19)])
    batches = []
    conv2d = torch.nn.functional.conv2d
    monkeypatch.setattr(torch.nn.functional, "conv2d", lambda x, *a, **k: batches.append(len(x)) or conv2d(x, *a, **k))
    together = ssim(noisy, clean)
    assert torch.equal(together, one_by_one) and max(batches) <= image_quality.IMAGES_PER_CHUNK
    assert torch.equal(psnr(noisy, clean), torch.cat([psnr(noisy[i : i + 1], clean[i : i + 1]) for i in range(19)]))


def test_classifier_metrics():
    logits = torch.tensor([[2.0, 1.0], [0.0, 3.0], [1.0, 0.0]])
    assert top1_accuracy(logits, torch.tensor([0, 1, 1])) == pytest.approx(2 / 3)
    assert teacher_agreement(logits, torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="labels must be"):
        top1_accuracy(logits, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"labels must be class indices in \[0, 1\], got values from -1 to 1 "
                       r"\(-1 marks an unlabelled item"):  # fmt: skip
        top1_accuracy(logits, torch.tensor([-1, 1, -1]))
    with pytest.raises(ValueError, match=r"got values from 0 to 2"):
        top1_accuracy(logits, torch.tensor([0, 2, 1]))


def test_latency_reports_each_batch_size():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())
    results = measure_latency(model, lambda batch: (torch.randn(batch, 3, 8, 8),), batch_sizes=(1, 4), repeats=3)
    assert [r["batch"] for r in results] == [1, 4]
    assert all(r["latency_ms"] > 0 and r["throughput"] > 0 and r["device"] == "cpu" for r in results)
    assert model.training  # mode restored


def test_onnx_export_matches_pytorch(tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.ConvTranspose2d(8, 3, 4, 2, 1), torch.nn.Tanh())  # fmt: skip
    result = export_onnx(model, (torch.randn(1, 3, 8, 8),), tmp_path / "student.onnx", repeats=3)
    assert Path(result["path"]).is_file() and result["max_abs_diff"] < 1e-5 and result["onnx_cpu_latency_ms"] > 0
    # A model that fits protobuf's limit is one self-contained file; larger weights go to OUT.data beside it.
    assert result["files"] == [result["path"]] and sorted(p.name for p in tmp_path.iterdir()) == ["student.onnx"]
    monkeypatch.setattr(export, "PROTOBUF_LIMIT_BYTES", 100)
    result = export_onnx(model, (torch.randn(1, 3, 8, 8),), tmp_path / "large.onnx", repeats=3)
    assert result["files"] == [str(tmp_path / "large.onnx"), str(tmp_path / "large.onnx.data")]
    assert (tmp_path / "large.onnx.data").is_file() and result["max_abs_diff"] < 1e-5
