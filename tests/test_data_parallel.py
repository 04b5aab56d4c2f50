"""Data parallelism and gradient accumulation change how a step's batch is split, never the step.

2 gloo processes at batch B (torch DistributedDataParallel), 1 process at 2B, and 1 process at B with
optim.accumulate 2 must reach the same weights, for a classifier and for a GAN distillation (student,
adapters and discriminator). The models have no batch norm in training mode (batch statistics are
per-process by definition; SyncBatchNorm, which fixes that, runs on GPUs only), and the discriminator
no spectral norm (its power iteration advances once per forward).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gankd.config import load_config
from gankd.train import load_checkpoint, train

CONFIGS = Path(__file__).parent.parent / "configs"
BATCH = 8
CLASSIFIER = ["model.options.width=4", "model.options.norm=none", "steps=3", "checkpoint_every=3"]
GAN_TEACHER = ["model.options.ngf=8", "gan.discriminator.options.ndf=4",
               "gan.discriminator.options.spectral_norm=false", "steps=2", "ema=0", "eval.num_samples=64"]  # fmt: skip
GAN_STUDENT = ["model.options.ngf=4", "model.options.norm=none", "gan.discriminator.options.ndf=4",
               "gan.discriminator.options.spectral_norm=false", "steps=3", "checkpoint_every=3", "ema=0",
               "eval.num_samples=64"]  # fmt: skip
# Float sums in another order (gloo's all-reduce, per-micro-batch backward): differences of a few ulps in the
# gradients, which three Adam steps of lr 2e-3 (classifier) or 5e-4 (GAN) keep far below these tolerances.
TOLERANCE = dict(rtol=1e-4, atol=1e-6)


@pytest.fixture(autouse=True)
def _proxy(monkeypatch, proxy_cache):
    monkeypatch.setenv("GANKD_CACHE", str(proxy_cache.parent))


def run_single(config_name: str, out: Path, overrides: list[str]) -> dict:
    train(load_config(CONFIGS / f"{config_name}.yaml", [f"output_dir={out}", *overrides]))
    return load_checkpoint(out / config_name)


def run_two_processes(config_name: str, out: Path, overrides: list[str]) -> dict:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
               "gankd.cli", "distill" if "distill" in config_name else "train",
               str(CONFIGS / f"{config_name}.yaml")]  # fmt: skip
    for override in [f"output_dir={out}", *overrides]:
        command += ["--set", override]
    environment = os.environ | {"OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=environment)
    assert result.returncode == 0, result.stderr[-3000:]
    return load_checkpoint(out / config_name)


def assert_same_training(reference: dict, other: dict, parts: tuple[str, ...]) -> None:
    assert reference["step"] == other["step"]
    for part in parts:
        assert reference[part].keys() == other[part].keys()
        for key, value in reference[part].items():
            torch.testing.assert_close(other[part][key], value, **TOLERANCE, msg=f"{part}.{key}")


def test_classifier_two_processes_and_accumulation_equal_one_large_batch(tmp_path):
    one = run_single("digits_cnn_teacher", tmp_path / "one", [*CLASSIFIER, f"data.batch_size={2 * BATCH}"])
    accumulated = run_single("digits_cnn_teacher", tmp_path / "acc", [*CLASSIFIER, f"data.batch_size={BATCH}",
                                                                       "optim.accumulate=2"])  # fmt: skip
    two = run_two_processes("digits_cnn_teacher", tmp_path / "ddp", [*CLASSIFIER, f"data.batch_size={BATCH}"])
    assert_same_training(one, accumulated, ("model",))
    assert_same_training(one, two, ("model",))
    # A different split of the data would train differently: the comparison can fail.
    other_seed = run_single("digits_cnn_teacher", tmp_path / "seed", [*CLASSIFIER, f"data.batch_size={2 * BATCH}",
                                                                       "seed=1"])  # fmt: skip
    assert not torch.allclose(other_seed["model"]["fc.weight"], one["model"]["fc.weight"], **TOLERANCE)


def test_gan_distillation_two_processes_and_accumulation_equal_one_large_batch(tmp_path):
    teacher_config = load_config(CONFIGS / "digits_dcgan_teacher.yaml", [f"output_dir={tmp_path}", *GAN_TEACHER])
    train(teacher_config)
    # The shipped recipe with 1x1-adapter feature terms added, so that adapters are trained and compared too.
    terms = ("terms={output: {weight: 1.0, kind: l1}, adapted: {weight: 1.0, pairs: {stem: stem, blocks.0: blocks.0}}, "
             "adversarial: {weight: 0.01, loss: nonsaturating}}")  # fmt: skip
    student = [*GAN_STUDENT, f"distill.teacher={tmp_path / 'digits_dcgan_teacher'}", terms]
    one = run_single("digits_dcgan_distill", tmp_path / "one", [*student, f"data.batch_size={2 * BATCH}"])
    accumulated = run_single("digits_dcgan_distill", tmp_path / "acc", [*student, f"data.batch_size={BATCH}",
                                                                         "optim.accumulate=2"])  # fmt: skip
    two = run_two_processes("digits_dcgan_distill", tmp_path / "ddp", [*student, f"data.batch_size={BATCH}"])
    parts = ("model", "terms", "discriminator")
    assert one["terms"] and one["discriminator"]  # adapters and a discriminator were trained and compared
    assert_same_training(one, accumulated, parts)
    assert_same_training(one, two, parts)


def test_an_objective_on_tapped_features_alone_trains_under_ddp(tmp_path):
    # Attention transfer on conv2 alone: conv3 and fc get no gradient, which DDP must be told to expect.
    small = [*CLASSIFIER, "steps=2", "checkpoint_every=2", f"data.batch_size={BATCH}"]
    train(load_config(CONFIGS / "digits_cnn_teacher.yaml", [f"output_dir={tmp_path}", *small]))
    student = [
        *small,
        f"distill.teacher={tmp_path / 'digits_cnn_teacher'}",
        "terms={attention: {pairs: {conv2: conv2}}}",
    ]
    two = run_two_processes("digits_cnn_distill", tmp_path / "ddp", student)
    one = run_single("digits_cnn_distill", tmp_path / "one", [*student, f"data.batch_size={2 * BATCH}"])
    assert_same_training(one, two, ("model",))
    after_one = run_single("digits_cnn_distill", tmp_path / "one_step", [*student, "steps=1", "checkpoint_every=1"])
    assert torch.equal(two["model"]["fc.weight"], after_one["model"]["fc.weight"])  # untouched after the taps
    assert not torch.equal(two["model"]["conv1.0.weight"], after_one["model"]["conv1.0.weight"])


def test_hidden_labels_keep_accumulation_equal_to_one_large_batch(tmp_path):
    # With data.keep_unlabelled each micro-batch holds its own number of labelled items; ce's mean over all
    # items (the unlabelled adding 0) keeps 2 micro-batches of B equal to one batch of 2B all the same.
    train(load_config(CONFIGS / "digits_cnn_teacher.yaml", [f"output_dir={tmp_path}", *CLASSIFIER]))
    student = [*CLASSIFIER, f"distill.teacher={tmp_path / 'digits_cnn_teacher'}", "data.limit_per_class=40",
               "data.keep_unlabelled=true", "terms={kd: 1.0, ce: 1.0}", "log_every=1"]  # fmt: skip
    one = run_single("digits_cnn_distill", tmp_path / "one", [*student, f"data.batch_size={2 * BATCH}"])
    accumulated = run_single("digits_cnn_distill", tmp_path / "acc", [*student, f"data.batch_size={BATCH}",
                                                                       "optim.accumulate=2"])  # fmt: skip
    assert_same_training(one, accumulated, ("model",))
    # Adam's first steps follow the gradients' signs more than their sizes: compare the logged losses too.
    logged = [[json.loads(line) for line in (out / "digits_cnn_distill" / "log.jsonl").open() if '"ce"' in line]
              for out in (tmp_path / "one", tmp_path / "acc")]  # fmt: skip
    assert len(logged[0]) == 3 and [entry["step"] for entry in logged[0]] == [entry["step"] for entry in logged[1]]
    for reference, other in zip(*logged, strict=True):
        assert other["ce"] == pytest.approx(reference["ce"], rel=1e-5) and reference["ce"] > 0
