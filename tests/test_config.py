"""gankd.config: YAML + --set overrides into typed dataclasses; unknown keys and bad types rejected."""

from pathlib import Path

import pytest

import gankd.data
from gankd.config import ConfigError, RunConfig, load_config, save_config, with_absolute_paths

CONFIGS = Path(__file__).parent.parent / "configs"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_config_loads_and_is_named_after_its_file(path):
    config = load_config(path)
    assert config.name == path.stem
    data, *_family, role = path.stem.split("_")
    # Recipes for the user's own folders are named after the project whose checkpoints they distil.
    assert config.mode == role and (config.data.name.startswith(data) or config.data.name.endswith("_folder"))


def test_overrides_are_typed_and_nested(tmp_path):
    config = load_config(CONFIGS / "digits_dcgan_teacher.yaml",
                         ["steps=7", "optim.lr=1e-3", "model.options.ngf=8", "eval.metrics=[fd_digits]"])  # fmt: skip
    assert config.steps == 7 and config.optim.lr == 1e-3 and config.model.options["ngf"] == 8
    assert config.eval.metrics == ["fd_digits"]
    save_config(config, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == config  # the resolved config reloads to itself


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["stepz=3"], "unknown key config.stepz; valid keys of config: name, task"),
        (["optim.learning_rate=1"], "unknown key config.optim.learning_rate; valid keys of config.optim: lr"),
        (["steps=many"], "config.steps must be int, got str 'many'"),
        (["steps=true"], "config.steps must be int, got bool"),
        (["optim.betas=0.5"], "config.optim.betas must be a list"),
        (["task=segmentation"], "config.task must be one of"),
        (["mode=distill"], "config.distill.teacher is empty: give the teacher's run directory"),
        (["precision=fp8"], "config.precision must be one of 'fp32', 'bf16', 'fp16'; got 'fp8'"),
        (["ema=1.5"], "config.ema must be in [0, 1)"),
        (["steps=0"], "config.steps must be >= 1"),
        (["nonsense"], "--set takes key.path=value"),
        (["terms={adversarial: 0.0}"], "config.terms: terms select no loss term: give at least one of"),
        (["terms={adversarial: {loss: wasserstein}}"], "config.terms: GAN loss mode must be one of"),
        (["terms={output: 1.0}"], "config.terms: 'output' needs a teacher, and a 'teacher' run has none"),
        (["terms={kd: 1.0}"], "config.terms: loss term 'kd' compares logits, but this task's models output image"),
        (["terms={adversarial: {wieght: 1}}"], "config.terms: loss term 'adversarial': got an unexpected keyword"),
        (["terms={nothing: 1}"], "config.terms: unknown loss term 'nothing'; valid terms for image outputs:"),
        (["mode=distill", "distill.teacher=runs/x", "terms={adversarial: 1.0}"], "none of the terms ['adversarial']"),
        (["mode=distill", "distill.teacher=runs/x", "terms={}"], "config.terms names no loss term"),
        (["optim.accumulate=0"], "config.optim.accumulate must be >= 1"),
        (["terms={ground_truth: 1.0}"], "'ground_truth' needs the batch's targets, and task 'generator' batches have"),
        (["terms={output: {kind: l1, impl: triton}}"], "config.terms: term 'output': impl is set once for all terms"),
        (["model.name=no_such_model"], "config.model.name 'no_such_model' is not registered; valid names: cifar"),
        (["data.name=no_such_data"], "config.data.name 'no_such_data' is not registered; valid names: digits"),
        (["gan.discriminator.name=dcgan"], "config.gan.discriminator.name 'dcgan' is not registered"),
        (["terms={ce: 1.0}", "task=classifier", "gan.conditional=true"], "config.gan.conditional is true but no term"),
        (["gan.optim.accumulate=2"], "unknown key config.gan.optim.accumulate; valid keys of config.gan.optim: lr"),
        (["gan.optim.schedule=cosin"], "config.gan.optim.schedule must be one of 'constant', 'cosine', 'linear'"),
        (["optim.betas=[0.9]"], "config.optim.betas must be two numbers"),
        (["eval.metrics=[psnr]"], "metric 'psnr' is not measured for task 'generator' (config.eval.metrics)"),
        (["eval.metrics=[fdd]"], "unknown metric 'fdd'; metrics for task 'generator' (config.eval.metrics) must be"),
        (["eval.split=val"], "config.eval.split must be one of 'train', 'test'"),
        (["imports=[no_such_module_here]"], "config.imports: cannot import module 'no_such_module_here'"),
        (["imports=[/nowhere/plugin.py]"], "config.imports: cannot import /nowhere/plugin.py: the file does not exist"),
        (["sample_every=-1"], "config.sample_every must be >= 0"),
        (["impl=fused"], "config.impl must be one of 'auto', 'triton', 'reference'; got 'fused'"),
    ],
)
def test_bad_configs_say_what_is_wrong(overrides, message):
    with pytest.raises(ConfigError, match=__import__("re").escape(message)):
        load_config(CONFIGS / "digits_dcgan_teacher.yaml", overrides)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "absent.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(tmp_path / "list.yaml")
    assert isinstance(load_config(), RunConfig)


def test_term_options_yaml_numbers_and_the_options_a_term_takes():
    config = load_config(CONFIGS / "digits_dcgan_teacher.yaml", ["terms={adversarial: {weight: 1e-2, loss: hinge}}"])
    assert config.terms == {"adversarial": {"weight": 0.01, "loss": "hinge"}}  # 1e-2 is a number, as in YAML 1.2
    with pytest.raises(ConfigError, match=r"'knid'; valid options: weight, kind$"):  # impl is the run's, not listed
        load_config(CONFIGS / "digits_dcgan_distill.yaml", ["terms={output: {knid: l1}}"])


def test_a_run_records_its_paths_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = load_config(None, ["data.name=image_folder", "data.options={root: photos, load_size: 64}",
                                "eval.inception_weights=w/inception.pt", "eval.lpips_weights=null"])  # fmt: skip
    recorded = with_absolute_paths(config, gankd.data.path_options("image_folder"))
    assert recorded.data.options == {"root": str(tmp_path / "photos"), "load_size": 64}
    assert recorded.eval.inception_weights == str(tmp_path / "w" / "inception.pt")
    assert recorded.eval.lpips_weights is None
    assert config.data.options["root"] == "photos"  # the config given is left as it was
