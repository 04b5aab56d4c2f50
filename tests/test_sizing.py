"""Students sized to a MACs budget: gankd.models.width_for_macs and distill.student_macs in runs."""

import json

import pytest
import torch

from gankd import models
from gankd.config import ConfigError, load_config
from gankd.train import load_checkpoint, train


def _macs(name, options, inputs):
    return models.cost(models.build(name, **options), *inputs)["macs"]


@pytest.mark.parametrize(
    ("name", "teacher_options", "student_options", "fraction"),
    [("resnet_g", {"ngf": 32, "n_blocks": 6, "n_downsampling": 0, "upscale": 4, "norm": "none", "residual": True},
      {"n_blocks": 5, "n_downsampling": 0, "upscale": 4, "norm": "none", "residual": True}, 1 / 8),
     ("dcgan_g", {"ngf": 64, "image_size": 32, "nz": 64, "channels": 1, "num_classes": 10},
      {"image_size": 32, "nz": 64, "channels": 1, "num_classes": 10}, 1 / 8),
     ("unet_g", {"ngf": 16, "num_downs": 6}, {"num_downs": 6}, 0.3),
     ("small_cnn", {"width": 32, "in_channels": 1}, {"in_channels": 1}, 1 / 16),
     ("patchgan_d", {"ndf": 64, "n_layers": 3}, {"n_layers": 2}, 1 / 4)],
)  # fmt: skip
def test_the_widest_width_within_the_budget(name, teacher_options, student_options, fraction):
    teacher = models.build(name, **teacher_options)
    inputs = models.example_inputs(teacher)
    width = models.width_for_macs(name, student_options, teacher, fraction)
    option = models.width_option(name)
    budget = fraction * _macs(name, teacher_options, inputs)
    assert _macs(name, {**student_options, option: width}, inputs) <= budget
    assert _macs(name, {**student_options, option: width + 1}, inputs) > budget


def test_a_student_that_resizes_its_inputs_is_counted_at_the_size_it_runs_at():
    # Teacher and student both resize their 32 px inputs to 64 px first (model.input size): the student must be
    # counted at 64 px too, not at the 32 px it is given, or it comes out about 4 times over the budget.
    teacher = models.set_input_convention(models.build("small_cnn", width=16, in_channels=1), size=64)
    inputs = (torch.zeros(1, 1, 32, 32),)
    width = models.width_for_macs("small_cnn", {"in_channels": 1}, teacher, 0.25, inputs, student_input={"size": 64})

    def macs(width: int) -> int:
        student = models.set_input_convention(models.build("small_cnn", width=width, in_channels=1), size=64)
        return models.cost(student, *inputs)["macs"]

    budget = 0.25 * models.cost(teacher, *inputs)["macs"]
    assert macs(width) <= budget < macs(width + 1)


def test_a_prunable_width_has_the_teachers_layers():
    # A CIFAR ResNet has a stem-to-stage shortcut conv only where the stage width differs from the stem's: at
    # width 2 (stage 32 = stem 32) it has none, so the teacher resnet32x4 (which has one) cannot be pruned to it.
    teacher = models.build("resnet32x4", num_classes=10)
    inputs = models.example_inputs(teacher, 2, 16)
    options = {"depth": 32, "num_classes": 10, "stem_channels": 32}
    assert models.width_for_macs("cifar_resnet", options, teacher, 0.3, inputs) == 2
    width = models.width_for_macs("cifar_resnet", options, teacher, 0.3, inputs, prunable=True)
    assert width == 1
    assert models.init_from_teacher(models.build("cifar_resnet", **options, width=width), teacher, inputs)["kept"]
    with pytest.raises(ValueError, match=r"no width up to \d+ gives cifar_resnet .* the teacher's layers"):
        models.width_for_macs("cifar_resnet", {**options, "depth": 8}, teacher, 0.3, inputs, prunable=True)


def test_sizing_errors_name_the_problem():
    teacher = models.build("small_cnn", width=8, in_channels=1)
    with pytest.raises(ValueError, match="model 'resnet8x4' declares no width_option"):
        models.width_for_macs("resnet8x4", {}, models.build("resnet8x4"), 0.5)
    with pytest.raises(ValueError, match=r"fraction must be a number in \(0, 1\]"):
        models.width_for_macs("small_cnn", {"in_channels": 1}, teacher, 1.5)
    with pytest.raises(ValueError, match="even width=1 costs .* of the teacher's MACs, more than 0.0001"):
        models.width_for_macs("small_cnn", {"in_channels": 1}, teacher, 1e-4)


def test_a_distill_run_records_the_width_it_chose(tmp_path, monkeypatch):
    torch.manual_seed(0)
    teacher_options = {"ngf": 16, "image_size": 32, "nz": 16, "channels": 1, "num_classes": 10}
    torch.save(models.build("dcgan_g", **teacher_options).state_dict(), tmp_path / "teacher.pt")
    teacher = json.dumps({"model": {"name": "dcgan_g", "options": teacher_options}, "weights": "teacher.pt"})
    student_options = json.dumps({key: value for key, value in teacher_options.items() if key != "ngf"})
    monkeypatch.chdir(tmp_path)
    overrides = ["task=generator", "mode=distill", "model.name=dcgan_g", f"model.options={student_options}",
                 "data.name=digits", "data.batch_size=4", "terms={output: 1.0}", f"distill.teacher={teacher}",
                 "distill.student_init=teacher", "distill.student_macs=0.25", "steps=2", "checkpoint_every=2",
                 "eval.metrics=[]", "output_dir=runs", "name=sized"]  # fmt: skip
    train(load_config(None, overrides))
    recorded = load_checkpoint(tmp_path / "runs" / "sized")["config"]["model"]["options"]["ngf"]
    expected = models.width_for_macs("dcgan_g", json.loads(student_options),
                                     models.build("dcgan_g", **teacher_options), 0.25)  # fmt: skip
    assert recorded == expected < 16
    assert load_config(tmp_path / "runs" / "sized" / "config.yaml").model.options["ngf"] == expected


def test_student_macs_is_checked_at_load():
    base = ["mode=distill", "terms={output: 1.0}", "distill.teacher=runs/teacher"]
    with pytest.raises(ConfigError, match=r"config.distill.student_macs must be in \(0, 1\]"):
        load_config(None, [*base, "distill.student_macs=2"])
    with pytest.raises(ConfigError, match="config.distill.student_macs: model 'resnet8x4' declares no width_option"):
        load_config(None, [*base, "task=classifier", "model.name=resnet8x4", "distill.student_macs=0.5"])
    with pytest.raises(ConfigError, match="config.distill.student_macs sizes a student against its teacher"):
        load_config(None, ["mode=scratch", "distill.student_macs=0.5"])
