"""Run configs (files and checkpoints) written for gankd's earlier format read as the current ones, with a
notice that names the earlier keys and shows the new form."""

from pathlib import Path

import pytest
import torch

from gankd.config import ConfigError, load_config, to_dict
from gankd.config_migration import ConfigMigrated
from gankd.train import TrainingError, load_trained_model, train

CONFIGS = Path(__file__).parent.parent / "configs"

# The shipped configs as the earlier format wrote them (comments left out).
EARLIER = {
    "digits_dcgan_distill": """
name: digits_dcgan_distill
task: generator
mode: distill
model:
  name: dcgan_g
  options: {image_size: 32, nz: 64, ngf: 8, channels: 1, num_classes: 10}
data: {name: digits, batch_size: 64}
optim: {lr: 0.0005, betas: [0.5, 0.999]}
gan:
  discriminator:
    name: dcgan_d
    options: {image_size: 32, ndf: 32, channels: 1, num_classes: 10, norm: none, spectral_norm: true}
  loss: nonsaturating
  optim: {lr: 0.0002, betas: [0.5, 0.999]}
distill:
  teacher: runs/digits_dcgan_teacher
  weights: {output: 1.0, adversarial: 0.01}
  output_kind: l1
steps: 1000
ema: 0.999
checkpoint_every: 500
eval: {metrics: [fd_digits, kid_digits]}
""",
    "digits_dcgan_teacher": """
name: digits_dcgan_teacher
task: generator
mode: teacher
model:
  name: dcgan_g
  options: {image_size: 32, nz: 64, ngf: 32, channels: 1, num_classes: 10}
data: {name: digits, batch_size: 64}
optim: {lr: 0.0002, betas: [0.5, 0.999]}
gan:
  discriminator:
    name: dcgan_d
    options: {image_size: 32, ndf: 32, channels: 1, num_classes: 10, norm: none, spectral_norm: true}
  loss: nonsaturating
  optim: {lr: 0.0002, betas: [0.5, 0.999]}
steps: 2000
ema: 0.999
checkpoint_every: 500
log_every: 50
eval: {metrics: [fd_digits, kid_digits]}
""",
    "photos_resnet_teacher": """
name: photos_resnet_teacher
task: image2image
mode: teacher
model:
  name: resnet_g
  options: {ngf: 32, n_blocks: 6, n_downsampling: 0, upscale: 4, norm: none, residual: true}
data:
  name: photos_sr
  options: {scale: 4, gray: true, rotate: true}
  batch_size: 16
optim: {lr: 0.001, betas: [0.9, 0.999], schedule: cosine}
gan: {weight: 0.0}
steps: 5000
checkpoint_every: 500
eval: {metrics: [psnr, ssim]}
""",
    "digits_cnn_distill": """
name: digits_cnn_distill
task: classifier
mode: distill
model:
  name: small_cnn
  options: {in_channels: 1, num_classes: 10, width: 8}
data: {name: digits, batch_size: 64}
optim: {lr: 0.002, betas: [0.9, 0.999], schedule: cosine}
distill:
  teacher: runs/digits_cnn_teacher
  weights: {kd: 0.9, ce: 0.1}
  temperature: 4.0
  impl: reference
steps: 600
checkpoint_every: 300
""",
}


@pytest.mark.parametrize("name", sorted(EARLIER))
def test_earlier_files_read_as_the_shipped_ones(name, tmp_path):
    earlier = tmp_path / f"{name}.yaml"
    earlier.write_text(EARLIER[name])
    with pytest.warns(ConfigMigrated, match="keys of gankd's earlier config format") as notices:
        migrated = load_config(earlier)
    shipped = load_config(CONFIGS / f"{name}.yaml", ["impl=reference"] if name == "digits_cnn_distill" else [])
    expected = to_dict(shipped)
    if name == "photos_resnet_teacher":  # the shipped teacher has since moved from l1 to the "psnr" kind
        expected["terms"] = {"ground_truth": 1.0}
    assert to_dict(migrated) == expected
    message = str(notices[0].message)
    assert "write them in this form" in message and "terms:" in message
    if name == "digits_dcgan_distill":
        assert "(distill.weights, distill.output_kind, gan.loss) are read as" in message
        assert "gan: {conditional: true}" in message


def test_earlier_feature_pairs_become_the_adapted_terms_pairs(tmp_path):
    earlier = tmp_path / "old.yaml"
    earlier.write_text("task: generator\nmode: distill\ndistill:\n  teacher: runs/t\n  feature_pairs: "
                       "{stem: stem, blocks.0: blocks.0}\n  weights: {output: 1.0, adapted: 0.5}\n")  # fmt: skip
    with pytest.warns(ConfigMigrated, match=r"\(distill.weights, distill.feature_pairs\) are read as"):
        config = load_config(earlier)
    assert config.terms == {
        "output": 1.0,
        "adapted": {"weight": 0.5, "pairs": {"stem": "stem", "blocks.0": "blocks.0"}},
    }


def test_earlier_gan_weight_and_loss_of_a_teacher_run(tmp_path):
    earlier = tmp_path / "old.yaml"
    earlier.write_text("task: image2image\nmode: scratch\ngan: {weight: 0.5, loss: hinge}\n")
    with pytest.warns(ConfigMigrated, match=r"gan.weight, gan.loss"):
        config = load_config(earlier)
    assert config.terms == {"ground_truth": 1.0, "adversarial": {"weight": 0.5, "loss": "hinge"}}
    earlier.write_text("task: generator\nmode: teacher\ngan: {loss: lsgan}\n")  # the earlier default weight, 1
    with pytest.warns(ConfigMigrated):
        assert load_config(earlier).terms == {"adversarial": {"weight": 1.0, "loss": "lsgan"}}
    with pytest.warns(ConfigMigrated, match=r"the --set overrides: keys .*\(distill.impl\) are read as \{impl: ref"):
        assert load_config(None, ["distill.impl=reference"]).impl == "reference"  # an earlier --set, too


def test_earlier_keys_keep_their_earlier_meaning(tmp_path):
    earlier = tmp_path / "old.yaml"
    # distill.weights meant nothing to a teacher run: its own loss stays (L1 here, no discriminator).
    earlier.write_text("task: image2image\nmode: teacher\ngan: {weight: 0.0}\ndistill: {weights: {adversarial: 0.5}}\n")
    with pytest.warns(ConfigMigrated):
        assert load_config(earlier).terms == {"ground_truth": 1.0}
    # An earlier --set gan.weight on a current file weights that file's adversarial term, keeping its options.
    with pytest.warns(ConfigMigrated, match="the --set overrides"):
        config = load_config(CONFIGS / "digits_dcgan_teacher.yaml", ["gan.weight=0.5"])
    assert config.terms == {"adversarial": {"weight": 0.5, "loss": "nonsaturating"}}
    # The earlier format refused a generator with gan.weight 0 (no loss at all); so does the migration.
    earlier.write_text("task: generator\nmode: teacher\ngan: {weight: 0}\n")
    with pytest.raises(ConfigError, match="leave this teacher run without a loss term; name its terms"):
        load_config(earlier)


def test_a_checkpoint_of_the_earlier_format_loads_and_teaches(tmp_path):
    small = [f"output_dir={tmp_path}", "steps=2", "model.options.width=4", "data.batch_size=16"]
    train(load_config(CONFIGS / "digits_cnn_teacher.yaml", small))
    path = tmp_path / "digits_cnn_teacher" / "checkpoints" / "last.pt"
    state = torch.load(path, weights_only=True)
    earlier = dict(state["config"])
    del earlier["terms"], earlier["impl"], earlier["imports"], earlier["sync_batchnorm"]
    earlier["gan"] = {key: value for key, value in earlier["gan"].items() if key != "conditional"} | {
        "weight": 1.0, "loss": "nonsaturating"}  # fmt: skip
    earlier["distill"] = earlier["distill"] | {"weights": {}, "output_kind": "l1", "impl": "auto"}
    earlier["optim"] = {key: value for key, value in earlier["optim"].items() if key != "accumulate"}
    torch.save(state | {"config": earlier}, path)
    with pytest.warns(ConfigMigrated, match="the checkpoint at"):
        model, loaded, _ = load_trained_model(path)
    del state["terms"]  # an earlier checkpoint kept adapters elsewhere: it cannot be resumed, and says so
    torch.save(state | {"config": earlier}, path)
    with pytest.raises(TrainingError, match="it can be evaluated, exported and distilled from, not resumed"):
        train(load_config(CONFIGS / "digits_cnn_teacher.yaml", [*small, "steps=3"]), resume=True)
    assert loaded.terms == {"ce": 1.0} and model.width == 4
    student = load_config(CONFIGS / "digits_cnn_distill.yaml", [*small, "steps=1", f"distill.teacher={path}",
                                                                "model.options.width=2"])  # fmt: skip
    with pytest.warns(ConfigMigrated):
        assert "agreement" in train(student)["metrics"]
