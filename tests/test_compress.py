"""benchmarks/compress.py adds the standard metrics exactly when their verified weights are on the machine."""

import pytest

from benchmarks import compress


def test_standard_metrics_follow_the_weights(monkeypatch, tmp_path):
    monkeypatch.setenv("GANKD_INCEPTION_WEIGHTS", str(tmp_path / "missing.pth"))
    monkeypatch.setenv("GANKD_LPIPS_BACKBONE", str(tmp_path / "missing.pth"))
    assert compress.standard_metrics("digits_gan") == []
    assert compress.standard_metrics("photos_sr") == []
    monkeypatch.setattr(compress, "resolve_weights", lambda weights: tmp_path / weights.filename)
    assert compress.standard_metrics("digits_gan") == ["fid", "kid"]
    assert compress.standard_metrics("photos_sr") == ["lpips"]
    assert compress.standard_metrics("digits_cls") == []


def test_a_run_from_another_config_is_not_reused(tmp_path, monkeypatch):
    run = compress.run_variant("digits_cls", "teacher", 0, tmp_path, ["steps=2", "eval.metrics=[accuracy]"])
    assert (run / "metrics.json").is_file()
    assert compress.run_variant("digits_cls", "teacher", 0, tmp_path, ["steps=2", "eval.metrics=[accuracy]"]) == run
    with pytest.raises(SystemExit, match="trained from a different config"):
        compress.run_variant("digits_cls", "teacher", 0, tmp_path, ["steps=3", "eval.metrics=[accuracy]"])
