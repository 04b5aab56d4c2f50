"""gankd.tasks: each task's batches, discriminator condition, defaults and evaluation, and telling tasks apart."""

from pathlib import Path

import pytest
import torch
from torch import nn

from gankd import data, models, tasks
from gankd.config import load_config
from gankd.metrics import ImageSets, PairedImages, Predictions
from gankd.train import TrainingError, load_checkpoint, train

CONFIGS = Path(__file__).parent.parent / "configs"


def test_each_task_splits_its_batch_and_names_its_condition():
    noise, labels, images = torch.randn(2, 4), torch.tensor([1, 0]), torch.rand(2, 3, 8, 8)
    generator, image2image, classifier = (tasks.build(name) for name in ("generator", "image2image", "classifier"))
    conditional = generator.unpack((noise, labels))
    assert conditional.inputs == (noise, labels) and conditional.condition is labels and conditional.target is None
    assert generator.unpack((noise, None)).inputs == (noise,)
    paired = image2image.unpack((images, images + 1))
    assert paired.inputs == (images,) and torch.equal(paired.target, images + 1) and paired.condition is images
    labelled = classifier.unpack((images, labels))
    assert labelled.target is labels and labelled.condition is None
    assert (generator.output, image2image.output, classifier.output) == ("image", "image", "logits")
    assert generator.evidence() == (ImageSets,) and image2image.evidence() == (PairedImages, ImageSets)
    assert classifier.evidence() == (Predictions,)
    # What a conditional discriminator sees: labels beside the images, or input and image along channels.
    assert generator.discriminator_inputs(images, labels) == (images, labels)
    (joined,) = image2image.discriminator_inputs(images + 1, images)
    assert torch.equal(joined, torch.cat([images, images + 1], 1))
    large = torch.rand(2, 3, 16, 16)  # super-resolution: the input is upsampled to the image's size
    (joined,) = image2image.discriminator_inputs(large, images)
    upsampled = torch.nn.functional.interpolate(images, size=(16, 16), mode="bilinear", align_corners=False)
    assert torch.equal(joined, torch.cat([upsampled, large], 1))
    with pytest.raises(ValueError, match=r"need one batch size, got inputs \(2, 3, 8, 8\) and images \(3,"):
        image2image.discriminator_inputs(torch.rand(3, 3, 16, 16), images)
    with pytest.raises(ValueError, match="task 'classifier' has no conditional discriminator"):
        classifier.discriminator_inputs(images, None)


def test_generator_batches_from_data_and_default_metrics():
    task = tasks.build("generator")
    conditional = models.build("dcgan_g", image_size=16, nz=5, ngf=2, num_classes=10)
    unconditional = models.build("dcgan_g", image_size=16, nz=5, ngf=2)
    images, labels = torch.rand(3, 3, 16, 16), torch.tensor([4, 5, 6])
    noise = torch.randn(3, 5)
    drawn, given = task.from_data((images, labels), conditional, lambda dims: noise[:, :dims])
    assert drawn is not None and torch.equal(drawn, noise) and given is labels
    assert task.from_data((images, labels), unconditional, lambda dims: noise)[1] is None
    assert task.real_images((images, labels)) is images
    with pytest.raises(ValueError, match="task 'generator' trains noise-to-image models with an `nz` attribute"):
        task.from_data((images, labels), models.build("small_cnn", width=2), lambda dims: noise)
    digits = data.build("digits", "test")
    assert task.default_metrics(digits, teacher=False) == ["fd_digits", "kid_digits"]  # the data set's proxies
    photos = data.build("photos_sr", "test")
    assert task.default_metrics(photos, teacher=False) == ["fid", "kid"]
    assert tasks.build("classifier").default_metrics(digits, teacher=True) == ["accuracy", "agreement"]
    assert tasks.build("classifier").default_terms == {"ce": 1.0}


def test_tasks_are_told_from_model_and_data():
    digits, photos = data.build("digits", "test")[0], data.build("photos_sr", "test")[0]
    assert tasks.infer(models.build("dcgan_g", ngf=2), digits).name == "generator"
    assert tasks.infer(models.build("small_cnn", width=2), digits).name == "classifier"
    assert tasks.infer(models.build("resnet_g", ngf=2, n_blocks=1), photos).name == "image2image"
    with pytest.raises(ValueError, match="cannot tell the task of Linear on these data .*no task accepts"):
        tasks.infer(torch.nn.Linear(2, 2), (torch.zeros(2), "text"))
    with pytest.raises(ValueError, match="task must be one of 'classifier', 'generator', 'image2image'"):
        tasks.build("segmentation")


def test_pix2pix_conditional_patchgan_is_a_config_switch(tmp_path):
    # image2image with a discriminator that sees (input, output) pairs: a PatchGAN on 3 + 3 channels.
    overrides = [f"output_dir={tmp_path}", "steps=2", "log_every=1", "model.options.ngf=4", "model.options.n_blocks=1",
                 "data.batch_size=2", "terms={ground_truth: 1.0, adversarial: {weight: 0.1, loss: lsgan}}",
                 "gan.discriminator={name: patchgan_d, options: {in_channels: 6, ndf: 4, n_layers: 2}}",
                 "gan.conditional=true"]  # fmt: skip
    result = train(load_config(CONFIGS / "photos_resnet_teacher.yaml", overrides))
    state = load_checkpoint(tmp_path / "photos_resnet_teacher")
    assert state["discriminator"]["stem.0.weight"].shape[1] == 6 and result["metrics"]["psnr"] > 0
    unconditional = [*overrides[:-2], "gan.discriminator={name: patchgan_d, options: {in_channels: 6, ndf: 4}}"]
    with pytest.raises(
        TrainingError,
        match=r"step 1: images must be \[N, 6, H, W\], got \(2, 3, 64, 64\)\. .*the "
        r"discriminator patchgan_d \{'in_channels': 6",
    ):
        train(load_config(CONFIGS / "photos_resnet_teacher.yaml", [*unconditional, f"output_dir={tmp_path / 'u'}"]))


def test_image2image_grid_shows_a_grayscale_input_beside_colour_outputs():
    colourise = nn.Conv2d(1, 3, 1)
    pairs = [(torch.rand(1, 8, 8) * 2 - 1, torch.rand(3, 8, 8) * 2 - 1) for _ in range(3)]  # fewer than 8 items
    grid = tasks.build("image2image").sample_grid(colourise, pairs, "cpu")
    assert grid.shape == (9, 3, 8, 8)  # inputs, outputs, targets: three rows of three
    assert torch.equal(grid[0], pairs[0][0].expand(3, -1, -1)) and torch.equal(grid[6], pairs[0][1])
