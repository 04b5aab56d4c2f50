"""Teachers trained elsewhere: the README's "Compress your own CycleGAN / pix2pix generator" recipe end to end
on synthetic official-format checkpoints and tiny image folders, students initialised from their teacher,
input conventions and teacher modes."""

import json

import official_layouts as official
import pytest
import torch
from PIL import Image

from gankd import configs, models
from gankd.cli import _run_teacher, main
from gankd.config import ConfigError, load_config
from gankd.train import load_checkpoint, load_teacher, load_trained_model
from gankd.train.builders import build_dataset, example_items
from gankd.train.distributed import setup, teardown
from gankd.train.objective import build_objective, sized_student


def _image_folder(folder, count, size, *, width=None, seed=0):
    folder.mkdir(parents=True)
    generator = torch.Generator().manual_seed(seed)
    for index in range(count):
        pixels = torch.randint(0, 256, (size, width or size, 3), generator=generator, dtype=torch.uint8)
        Image.fromarray(pixels.numpy()).save(folder / f"{index}.png")
    return folder


def _official_file(module, path):
    official.randomize_batch_norm_buffers(module, torch.Generator().manual_seed(0))
    torch.save(module.state_dict(), path)
    return path


def test_cyclegan_recipe_trains_evaluates_from_elsewhere_and_exports(tmp_path, capsys, monkeypatch):
    torch.manual_seed(0)
    weights = _official_file(official.ResnetGenerator(3, 3, ngf=16, norm="instance", n_blocks=9), tmp_path / "G_A.pth")
    images = _image_folder(tmp_path / "trainA", 6, 40)
    monkeypatch.chdir(tmp_path)  # relative paths, as a user types them
    overrides = ["data.options.root=trainA", "distill.teacher.weights=G_A.pth", "distill.teacher.model.options.ngf=16",
                 "model.options.ngf=4", "data.options.load_size=40", "data.options.crop_size=32", "data.batch_size=2",
                 "steps=2", "checkpoint_every=2", "output_dir=runs"]  # fmt: skip
    main(["distill", "cyclegan_resnet_distill", *sum((["--set", item] for item in overrides), [])])
    run = tmp_path / "runs" / "cyclegan_resnet_distill"
    state = load_checkpoint(run)
    assert state["config"]["distill"]["teacher"]["weights"] == str(weights)  # recorded absolute
    assert state["config"]["data"]["options"]["root"] == str(images)  # so is the data set's folder
    assert images.is_dir() and (run / "metrics.json").is_file()

    capsys.readouterr()
    other = tmp_path / "elsewhere"
    other.mkdir()
    monkeypatch.chdir(other)
    main(["eval", "--checkpoint", str(run), "--data-set", f"root={images}", "--data-set", "load_size=32"])
    result = json.loads(capsys.readouterr().out)["metrics"]
    assert set(result) >= {"psnr", "ssim"} and 0 < result["psnr"] < 100  # against the teacher's translations
    # --data-set changes one of the run's data options and keeps the others (its root, crop_size).
    main(["eval", "--checkpoint", str(run), "--data-set", "load_size=48"])
    assert json.loads(capsys.readouterr().out)["metrics"]["psnr"] > 0
    main(["export", "--checkpoint", str(run), "--out", str(other / "student.onnx")])
    assert (other / "student.onnx").is_file()


def test_pix2pix_recipe_with_teacher_discriminator_and_train_mode_teacher(tmp_path, monkeypatch):
    torch.manual_seed(0)
    _official_file(official.UnetGenerator(3, 3, 6, ngf=8, norm="batch", use_dropout=True), tmp_path / "G.pth")
    _official_file(official.NLayerDiscriminator(6, ndf=8, n_layers=3, norm="batch"), tmp_path / "D.pth")
    _image_folder(tmp_path / "facades" / "train", 4, 64, width=128)  # side-by-side AB images
    _image_folder(tmp_path / "facades" / "test", 2, 64, width=128, seed=1)
    monkeypatch.chdir(tmp_path)
    overrides = ["data.options.root=facades", "distill.teacher.weights=G.pth",
                 "distill.teacher.discriminator_weights=D.pth",
                 "distill.teacher.model.options.num_downs=6", "distill.teacher.model.options.ngf=8",
                 "model.options.num_downs=6", "model.options.ngf=4", "gan.discriminator.options.ndf=8",
                 "data.options.load_size=64", "data.options.crop_size=64", "data.batch_size=2", "steps=2",
                 "checkpoint_every=2", "output_dir=runs", "distill.teacher_mode=train"]  # fmt: skip
    config = load_config(configs.path("pix2pix_unet_distill"), overrides)
    dist = setup("cpu")
    try:
        teacher = load_teacher(config)
        distiller = build_objective(config, dist, teacher)
    finally:
        teardown(dist)
    assert distiller.teacher.training  # pix2pix's published behaviour: batch statistics and dropout
    official_d = official.NLayerDiscriminator(6, ndf=8, n_layers=3, norm="batch")
    official_d.load_state_dict(torch.load(tmp_path / "D.pth", weights_only=True))
    pairs = torch.randn(2, 6, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(distiller.discriminator.eval()(pairs), official_d.eval()(pairs), rtol=0, atol=0)
    main(["distill", "pix2pix_unet_distill", *sum((["--set", item] for item in overrides), [])])
    assert json.loads((tmp_path / "runs" / "pix2pix_unet_distill" / "metrics.json").read_text())["metrics"]["psnr"] > 0
    # gankd eval compares with the teacher as the run did: in train mode.
    assert _run_teacher(load_trained_model(tmp_path / "runs" / "pix2pix_unet_distill")[1], ["psnr"]).training


@pytest.mark.parametrize(
    ("name", "teacher_options", "student_options"),
    [("dcgan_g", {"ngf": 16, "image_size": 32, "num_classes": 10}, {"ngf": 4, "image_size": 32, "num_classes": 10}),
     ("small_cnn", {"width": 16, "in_channels": 1}, {"width": 4, "in_channels": 1})],
)  # fmt: skip
def test_student_init_teacher_starts_the_student_as_the_pruned_teacher(tmp_path, name, teacher_options,
                                                                        student_options):  # fmt: skip
    torch.manual_seed(3)
    teacher = models.build(name, **teacher_options)
    torch.save(teacher.state_dict(), tmp_path / "teacher.pt")
    task, data, terms = (("generator", "digits", "{output: 1.0}") if name == "dcgan_g" else
                         ("classifier", "digits", "{kd: 1.0}"))  # fmt: skip
    teacher_spec = json.dumps(
        {"model": {"name": name, "options": teacher_options}, "weights": str(tmp_path / "teacher.pt")}
    )
    overrides = [f"task={task}", "mode=distill", f"model.name={name}", f"model.options={json.dumps(student_options)}",
                 f"data.name={data}", f"terms={terms}", f"distill.teacher={teacher_spec}"]  # fmt: skip
    expected = models.build(name, **student_options)
    report = models.init_from_teacher(expected, models.build(name, **teacher_options, weights=tmp_path / "teacher.pt"))
    assert report["groups_pruned"] > 0
    dist = setup("cpu")
    try:
        for init, same in (("teacher", True), ("random", False)):
            config = load_config(None, [*overrides, f"distill.student_init={init}"])
            student = build_objective(config, dist, load_teacher(config)).student
            equal = all(torch.equal(value, expected.state_dict()[key]) for key, value in student.state_dict().items())
            assert equal is same
        # In a run, the recalibration statistics come from a batch of the run's own data.
        config = load_config(None, [*overrides, "distill.student_init=teacher"])
        items = example_items(build_dataset(config, "train"), config.seed)
        student = build_objective(config, dist, load_teacher(config), items).student
        from_data = models.build(name, **student_options)
        inputs = (items[0],) if name == "small_cnn" else None
        if inputs is not None:
            models.init_from_teacher(from_data, models.build(name, **teacher_options, weights=tmp_path / "teacher.pt"),
                                     inputs)  # fmt: skip
            state = student.state_dict()
            assert all(torch.equal(value, state[key]) for key, value in from_data.state_dict().items())
            assert not all(torch.equal(value, expected.state_dict()[key]) for key, value in state.items())
    finally:
        teardown(dist)
    with pytest.raises(ConfigError, match="config.distill.student_init must be one of"):
        load_config(None, [*overrides, "distill.student_init=pruned"])


def _distill_overrides(tmp_path, name, teacher_options, student_options, task, data, terms):
    torch.save(models.build(name, **teacher_options).state_dict(), tmp_path / "teacher.pt")
    teacher = json.dumps({"model": {"name": name, "options": teacher_options}, "weights": str(tmp_path / "teacher.pt")})
    return [f"task={task}", "mode=distill", f"model.name={name}", f"model.options={json.dumps(student_options)}",
            f"data.name={data}", f"terms={terms}", f"distill.teacher={teacher}"]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "teacher_options", "student_options", "task", "message"),
    [  # residual leaves every layer and shape as it is: only the options tell
        ("resnet_g", {"ngf": 8, "n_blocks": 1, "n_downsampling": 0, "upscale": 2, "residual": True},
         {"ngf": 4, "n_blocks": 1, "n_downsampling": 0, "upscale": 2}, "image2image",
         r"model\.options\.residual is False but the teacher's is True: at the teacher's ngf the student's model "
         r"does not compute the teacher's function, and a student pruned from its teacher differs from it in ngf "
         r"only; set those to the teacher's"),
        ("resnet_g", {"ngf": 8, "n_blocks": 1}, {"ngf": 4, "n_blocks": 1, "norm": "none"}, "image2image",
         r"model\.options\.norm is 'none' but the teacher's is 'instance'"),
    ],
)  # fmt: skip
def test_student_init_teacher_needs_the_teachers_options_but_the_width(tmp_path, name, teacher_options,
                                                                       student_options, task, message):  # fmt: skip
    data, terms = ("photos_sr", "{output: 1.0}") if task == "image2image" else ("digits", "{kd: 1.0}")
    overrides = _distill_overrides(tmp_path, name, teacher_options, student_options, task, data, terms)
    config = load_config(None, [*overrides, "distill.student_init=teacher"])
    dist = setup("cpu")
    try:
        with pytest.raises(ValueError, match=f"config.distill.student_init is 'teacher': {message}"):
            build_objective(config, dist, load_teacher(config))
        random = load_config(None, overrides)  # a student from random weights may differ as it likes
        assert build_objective(random, dist, load_teacher(random)).student is not None
    finally:
        teardown(dist)


def test_a_teacher_that_cannot_run_on_the_data_is_named_before_training(tmp_path):
    options = {"width": 8, "in_channels": 3}  # the digits are 1-channel images
    overrides = _distill_overrides(tmp_path, "small_cnn", options, {**options, "width": 4}, "classifier", "digits",
                                   "{kd: 1.0}")  # fmt: skip
    dist = setup("cpu")
    try:
        for setting, key in (("distill.student_init=teacher", "student_init is 'teacher'"),
                             ("distill.student_macs=0.5", "student_macs is 0.5")):  # fmt: skip
            config = load_config(None, [*overrides, setting])
            items = example_items(build_dataset(config, "train"), config.seed)
            with pytest.raises(ValueError, match=rf"config\.distill\.{key}: the teacher cannot run on the data "
                               r"digits \(.*channels.*\); check the teacher's options \(in_channels"):  # fmt: skip
                build_objective(sized_student(config, load_teacher(config), items), dist, load_teacher(config), items)
    finally:
        teardown(dist)


def test_student_init_teacher_needs_a_distill_run():
    with pytest.raises(ConfigError, match=r"config\.distill\.student_init 'teacher' starts a student from its "
                       r"teacher: it needs mode distill \(set it to random\)"):  # fmt: skip
        load_config(None, ["mode=scratch", "distill.student_init=teacher"])


def test_teacher_mapping_is_checked_at_load():
    base = ["mode=distill", "terms={output: 1.0}"]
    with pytest.raises(ConfigError, match="config.distill.teacher.weights is empty"):
        load_config(None, [*base, "distill.teacher={model: {name: dcgan_g}}"])
    with pytest.raises(ConfigError, match="config.distill.teacher.weights_format must be one of.*cyclegan"):
        load_config(None, [*base, "distill.teacher={model: {name: dcgan_g}, weights: x.pth, weights_format: pix2pix}"])
    with pytest.raises(ConfigError, match="unknown key config.distill.teacher.wieghts"):
        load_config(None, [*base, "distill.teacher={wieghts: x.pth}"])
    with pytest.raises(ConfigError, match="config.distill.teacher_mode must be one of"):
        load_config(None, [*base, "distill.teacher=runs/t", "distill.teacher_mode=test"])
    with pytest.raises(ConfigError, match="config.distill.teacher.model is missing: name the teacher's architecture"):
        load_config(None, [*base, "distill.teacher={weights: x.pth}"])  # no architecture is assumed
    # Key by key where the teacher is unset; a run-directory teacher is replaced whole, as the error says.
    keyed = load_config(None, [*base, "distill.teacher.weights=x.pth", "distill.teacher.model.name=resnet_g"])
    assert keyed.distill.teacher.weights == "x.pth" and keyed.distill.teacher.model.name == "resnet_g"
    with pytest.raises(ConfigError, match=r"teacher is 'runs/t', not a section: .*--set 'distill.teacher=\{...\}'"):
        load_config(None, [*base, "distill.teacher=runs/t", "distill.teacher.weights=x.pth"])


def test_input_convention_normalises_and_resizes_before_the_model():
    seen = []
    model = torch.nn.Identity()
    model.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0]))
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    models.set_input_convention(model, mean=mean, std=std, size=8)
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    output = model(images)
    resized = torch.nn.functional.interpolate(images, size=(8, 8), mode="bilinear", antialias=True)
    expected = ((resized + 1) / 2 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    torch.testing.assert_close(output, expected)
    with pytest.raises(ValueError, match="3 channel means for images with 1 channels"):
        model(torch.rand(1, 1, 8, 8))
    with pytest.raises(ValueError, match="one value per channel each, got 3 and 2"):
        models.set_input_convention(torch.nn.Identity(), mean=mean, std=std[:2])
    # In a run config the key is named, the teacher's as the student's.
    base = ["mode=distill", "terms={output: 1.0}", "distill.teacher={model: {name: resnet_g}, weights: x.pth}"]
    with pytest.raises(ConfigError, match=r"config.distill.teacher.model.input: std must be positive, got \[0.0\]"):
        load_config(None, [*base, "distill.teacher.model.input={mean: [0.5], std: [0]}"])
    with pytest.raises(ConfigError, match="config.model.input: size must be >= 0, got -3"):
        load_config(None, [*base, "model.input={size: -3}"])


def test_translation_metrics_measure_the_student_against_the_teacher(tmp_path):
    import copy

    from gankd import data, tasks
    from gankd.metrics import MetricSettings

    dataset = data.build("image_folder", "test", root=_image_folder(tmp_path / "A", 3, 16))
    task = tasks.build("translation")
    student = models.build("resnet_g", ngf=4, n_blocks=1)
    same = task.evaluate(student, dataset, ["psnr"], teacher=copy.deepcopy(student), settings=MetricSettings())
    other = task.evaluate(student, dataset, ["psnr"], teacher=models.build("resnet_g", ngf=4, n_blocks=1),
                          settings=MetricSettings())  # fmt: skip
    assert same["metrics"]["psnr"] > 60 > other["metrics"]["psnr"]
    with pytest.raises(ValueError, match="against the teacher's: evaluate a distilled run"):
        task.evaluate(student, dataset, ["psnr"], teacher=None, settings=MetricSettings())
    assert task.unpack((torch.zeros(1, 3, 8, 8), None)).target is None
