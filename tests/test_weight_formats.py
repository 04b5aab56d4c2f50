"""Official-layout checkpoints load into the zoo and reproduce the official networks' outputs exactly.

Each test builds an independent re-implementation of a published architecture (tests/official_layouts.py),
saves its state dict as that project saves it, loads the file through gankd.models.build(weights=...,
weights_format=...) and compares outputs, in eval mode and in train mode (batch statistics, dropout under
the same seed, as pix2pix's published outputs are made).
"""

import re

import official_layouts as official
import pytest
import torch
from torch import nn

from gankd.models import WeightsFormatError, build, load_weights, weights_formats
from gankd.models.file_architectures import cyclegan_architecture, dcgan_example_architecture, describe


def _save(module: nn.Module, path, state=None, seed=0):
    official.randomize_batch_norm_buffers(module, torch.Generator().manual_seed(seed))
    torch.save(module.state_dict() if state is None else state, path)
    return path


def _assert_same(ours: nn.Module, theirs: nn.Module, *inputs: torch.Tensor, train: bool = False) -> None:
    ours.train(train), theirs.train(train)
    with torch.no_grad():
        torch.manual_seed(1)
        expected = theirs(*(x.clone() for x in inputs))
        torch.manual_seed(1)
        actual = ours(*(x.clone() for x in inputs))
    torch.testing.assert_close(actual, expected, rtol=0, atol=0)


@pytest.mark.parametrize(
    ("norm", "n_blocks", "dropout"),
    [("instance", 9, False), ("instance", 6, True), ("batch", 9, True), ("batch", 6, False), ("none", 6, True)],
)
def test_cyclegan_resnet_generator(tmp_path, norm, n_blocks, dropout):
    torch.manual_seed(0)
    theirs = official.ResnetGenerator(3, 3, ngf=8, norm=norm, use_dropout=dropout, n_blocks=n_blocks)
    path = _save(theirs, tmp_path / "latest_net_G.pth")
    ours = build("resnet_g", ngf=8, n_blocks=n_blocks, norm=norm, dropout=dropout, weights=path,
                 weights_format="cyclegan")  # fmt: skip
    images = torch.randn(2, 3, 32, 32)
    _assert_same(ours, theirs, images)
    _assert_same(ours, theirs, images, train=True)


def test_cyclegan_legacy_instance_norm_keys_are_dropped(tmp_path):
    torch.manual_seed(0)
    theirs = official.ResnetGenerator(3, 3, ngf=8, norm="instance", n_blocks=6)
    legacy = official.with_legacy_instance_norm_keys(theirs.state_dict(), theirs)
    assert any(key.endswith("running_mean") for key in legacy)
    path = _save(theirs, tmp_path / "old.pth", state=legacy)
    _assert_same(build("resnet_g", ngf=8, n_blocks=6, weights=path, weights_format="cyclegan"), theirs,
                 torch.randn(1, 3, 16, 16))  # fmt: skip


@pytest.mark.parametrize(
    ("norm", "num_downs", "size", "dropout"),
    [("batch", 8, 256, True), ("batch", 6, 64, False), ("instance", 7, 128, True), ("none", 7, 128, False)],
)
def test_pix2pix_unet_generator(tmp_path, norm, num_downs, size, dropout):
    torch.manual_seed(0)
    theirs = official.UnetGenerator(3, 3, num_downs, ngf=4, norm=norm, use_dropout=dropout)
    path = _save(theirs, tmp_path / "latest_net_G.pth")
    ours = build("unet_g", num_downs=num_downs, ngf=4, norm=norm, dropout=dropout, weights=path,
                 weights_format="cyclegan")  # fmt: skip
    if norm != "none":  # (without norm gankd's convs have biases the official ones lack: loaded as zeros)
        assert len(ours.state_dict()) == len(theirs.state_dict())
    images = torch.randn(2, 3, size, size)
    _assert_same(ours, theirs, images)
    _assert_same(ours, theirs, images, train=True)  # pix2pix's published outputs: batch statistics, dropout on


def test_unet_256_has_the_published_size_and_taps():
    with torch.device("meta"):
        model = build("unet_g", num_downs=8)
    assert sum(p.numel() for p in model.parameters()) == sum(
        p.numel() for p in official.UnetGenerator(3, 3, 8, ngf=64).parameters()
    )
    assert model.feature_layers == ("down.7", "up.3", "up.2", "up.1")
    small = build("unet_g", num_downs=6, ngf=4)
    features = {}
    for path in small.feature_layers:
        small.get_submodule(path).register_forward_hook(lambda m, i, o, path=path: features.setdefault(path, o))
    small(torch.randn(1, 3, 64, 64))
    assert {path: tuple(value.shape[1:]) for path, value in features.items()} == {
        "down.5": (32, 1, 1), "up.3": (16, 8, 8), "up.2": (8, 16, 16), "up.1": (4, 32, 32)
    }  # fmt: skip
    with pytest.raises(ValueError, match="divisible by 2\\^num_downs = 64"):
        small(torch.randn(1, 3, 96, 96))


@pytest.mark.parametrize("norm", ["batch", "instance", "none"])
@pytest.mark.parametrize("n_layers", [2, 3])
def test_cyclegan_patchgan_discriminator(tmp_path, norm, n_layers):
    torch.manual_seed(0)
    theirs = official.NLayerDiscriminator(6, ndf=8, n_layers=n_layers, norm=norm)
    path = _save(theirs, tmp_path / "latest_net_D.pth")
    ours = build("patchgan_d", in_channels=6, ndf=8, n_layers=n_layers, norm=norm, weights=path,
                 weights_format="cyclegan")  # fmt: skip
    images = torch.randn(2, 6, 64, 64)
    _assert_same(ours, theirs, images)
    _assert_same(ours, theirs, images, train=True)


def test_dcgan_example_generator_and_discriminator(tmp_path):
    torch.manual_seed(0)
    generator = official.DCGANGenerator(nz=100, ngf=8, nc=3)
    discriminator = official.DCGANDiscriminator(nc=3, ndf=8)
    g_path, d_path = _save(generator, tmp_path / "netG.pth"), _save(discriminator, tmp_path / "netD.pth")
    ours = build("dcgan_g", ngf=8, weights=g_path, weights_format="dcgan_example")
    noise = torch.randn(4, 100, 1, 1)  # the example's input shape
    _assert_same(ours, generator, noise)
    _assert_same(ours, generator, noise, train=True)
    judge = build("dcgan_d", ndf=8, weights=d_path, weights_format="dcgan_example").eval()
    discriminator.eval()
    images = torch.randn(4, 3, 64, 64)
    with torch.no_grad():  # gankd returns logits; the example's D ends in a sigmoid
        torch.testing.assert_close(torch.sigmoid(judge(images)), discriminator(images), rtol=1e-6, atol=1e-7)
    assert torch.count_nonzero(judge.stem[0].bias) == 0 and torch.count_nonzero(judge.head.bias) == 0


def test_torchvision_format_takes_wrapped_and_reference_script_files(tmp_path):
    torch.manual_seed(0)
    source = build("torchvision", arch="resnet18", num_classes=10).eval()
    ddp = {f"module.{key}": value for key, value in source.state_dict().items()}
    torch.save({"model": ddp, "optimizer": {}, "epoch": 3}, tmp_path / "checkpoint.pth")
    loaded = build("torchvision", arch="resnet18", num_classes=10, weights=tmp_path / "checkpoint.pth",
                   weights_format="torchvision").eval()  # fmt: skip
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(images), source(images))


def test_gankd_format_reads_state_dicts_checkpoints_and_prefers_ema(tmp_path):
    torch.manual_seed(0)
    source = build("small_cnn", width=4)
    torch.save(source.state_dict(), tmp_path / "weights.pt")
    assert torch.equal(build("small_cnn", width=4, weights=tmp_path / "weights.pt").fc.weight, source.fc.weight)
    averaged = {f"module.{key}": value + 1 for key, value in source.state_dict().items()}
    state = {"step": 3, "config": {}, "model": source.state_dict(), "ema": {**averaged, "n_averaged": torch.tensor(3)}}
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    torch.save(state, tmp_path / "run" / "checkpoints" / "last.pt")
    loaded = build("small_cnn", width=4, weights=tmp_path / "run")
    assert torch.equal(loaded.fc.weight, source.fc.weight + 1)


def test_wrong_files_and_formats_are_named(tmp_path):
    torch.manual_seed(0)
    theirs = official.ResnetGenerator(3, 3, ngf=8, norm="instance", n_blocks=6)
    path = _save(theirs, tmp_path / "latest_net_G.pth")
    with pytest.raises(ValueError, match="unknown weights format 'pix2pix'; valid names: cyclegan, dcgan_example"):
        build("resnet_g", ngf=8, n_blocks=6, weights=path, weights_format="pix2pix")
    assert weights_formats() == ["cyclegan", "dcgan_example", "gankd", "torchvision"]
    # Nine blocks expected, six in the file: the missing keys are named in the file's own names.
    with pytest.raises(
        WeightsFormatError,
        match=r"the file lacks \d+ keys \(model.16.conv_block.1.weight.*holds resnet_g\(.*n_blocks=6,",
    ):
        build("resnet_g", ngf=8, n_blocks=9, weights=path, weights_format="cyclegan")
    with pytest.raises(WeightsFormatError, match="has no place for .*model.1.weight"):
        load_weights(build("small_cnn"), path, "gankd")
    with pytest.raises(WeightsFormatError, match="'cyclegan' format holds resnet_g, unet_g or patchgan_d .*SmallCNN"):
        load_weights(build("small_cnn"), path, "cyclegan")
    with pytest.raises(
        WeightsFormatError, match=r"other shapes \(.* in the file and .*\): the file holds resnet_g\(.*ngf=8,"
    ):
        build("resnet_g", ngf=16, n_blocks=6, weights=path, weights_format="cyclegan")
    with pytest.raises(WeightsFormatError, match="build the model with n_downsampling=2"):
        build("resnet_g", ngf=8, n_blocks=6, n_downsampling=1, weights=path, weights_format="cyclegan")
    with pytest.raises(WeightsFormatError, match="'dcgan_example' format holds dcgan_g or dcgan_d"):
        build("resnet_g", ngf=8, n_blocks=6, weights=path, weights_format="dcgan_example")
    with pytest.raises(WeightsFormatError, match="missing.pth does not exist .*never downloads"):
        build("resnet_g", weights=tmp_path / "missing.pth", weights_format="cyclegan")
    (tmp_path / "garbage.pth").write_bytes(b"\x00not a torch file")
    with pytest.raises(WeightsFormatError, match="garbage.pth as tensors only: it is corrupt"):
        build("resnet_g", weights=tmp_path / "garbage.pth", weights_format="cyclegan")


class _Payload:
    """An object whose unpickling would run code: weights_only loading must refuse it."""

    def __reduce__(self):
        return (print, ("this must never run",))


def test_pickled_objects_are_refused_without_unsafe_advice(tmp_path, capsys):
    torch.save({"weight": _Payload()}, tmp_path / "pickle.pth")
    with pytest.raises(WeightsFormatError) as error:
        build("small_cnn", weights=tmp_path / "pickle.pth", weights_format="torchvision")
    assert "pickled objects" in str(error.value) and "weights_only=False" not in str(error.value)
    assert "must never run" not in capsys.readouterr().out


@pytest.mark.parametrize(
    ("official_model", "expected"),
    [
        (lambda: official.ResnetGenerator(1, 3, ngf=4, norm="instance", use_dropout=True, n_blocks=9),
         ("resnet_g", dict(in_channels=1, out_channels=3, ngf=4, n_blocks=9, norm="instance", dropout=True))),
        (lambda: official.ResnetGenerator(3, 1, ngf=8, norm="batch", n_blocks=4),
         ("resnet_g", dict(in_channels=3, out_channels=1, ngf=8, n_blocks=4, norm="batch", dropout=False))),
        (lambda: official.ResnetGenerator(3, 3, ngf=4, norm="none", n_blocks=6),
         ("resnet_g", dict(in_channels=3, out_channels=3, ngf=4, n_blocks=6, norm="none", dropout=False))),
        (lambda: official.UnetGenerator(3, 1, num_downs=7, ngf=4, norm="batch", use_dropout=True),
         ("unet_g", dict(in_channels=3, out_channels=1, num_downs=7, ngf=4, norm="batch"))),
        (lambda: official.UnetGenerator(1, 3, num_downs=5, ngf=8, norm="instance"),
         ("unet_g", dict(in_channels=1, out_channels=3, num_downs=5, ngf=8, norm="instance"))),
        (lambda: official.UnetGenerator(3, 3, num_downs=6, ngf=4, norm="none"),
         ("unet_g", dict(in_channels=3, out_channels=3, num_downs=6, ngf=4, norm="none"))),
        (lambda: official.NLayerDiscriminator(6, ndf=4, n_layers=2, norm="batch"),
         ("patchgan_d", dict(in_channels=6, ndf=4, n_layers=2, norm="batch"))),
        (lambda: official.NLayerDiscriminator(3, ndf=8, n_layers=4, norm="instance"),
         ("patchgan_d", dict(in_channels=3, ndf=8, n_layers=4, norm="instance"))),
        (lambda: official.NLayerDiscriminator(3, ndf=4, n_layers=1, norm="none"),
         ("patchgan_d", dict(in_channels=3, ndf=4, n_layers=1, norm="none"))),
    ],
)  # fmt: skip
def test_cyclegan_files_say_which_model_they_hold(tmp_path, official_model, expected):
    torch.manual_seed(0)
    path = _save(official_model(), tmp_path / "net.pth")
    state = torch.load(path, weights_only=True)
    assert cyclegan_architecture(state) == expected
    name, options = expected
    build(name, **options, weights=path, weights_format="cyclegan")  # the options it names load the file
    wrong = {"ngf": 16} if "ngf" in options else {"ndf": 16}
    with pytest.raises(
        WeightsFormatError, match="(?i)" + re.escape(f"the file holds {describe(expected)}: build the model")
    ):
        build(name, **{**options, **wrong}, weights=path, weights_format="cyclegan")


@pytest.mark.parametrize(("nz", "ngf", "nc"), [(100, 8, 3), (16, 4, 1)])
def test_dcgan_example_files_say_which_model_they_hold(tmp_path, nz, ngf, nc):
    torch.manual_seed(0)
    g_path = _save(official.DCGANGenerator(nz=nz, ngf=ngf, nc=nc), tmp_path / "netG.pth")
    d_path = _save(official.DCGANDiscriminator(nc=nc, ndf=ngf), tmp_path / "netD.pth")
    generator = dcgan_example_architecture(torch.load(g_path, weights_only=True))
    assert generator == ("dcgan_g", dict(image_size=64, nz=nz, ngf=ngf, channels=nc))
    discriminator = dcgan_example_architecture(torch.load(d_path, weights_only=True))
    assert discriminator == ("dcgan_d", dict(image_size=64, channels=nc, ndf=ngf))
    build(generator[0], **generator[1], weights=g_path, weights_format="dcgan_example")
    build(discriminator[0], **discriminator[1], weights=d_path, weights_format="dcgan_example")
    with pytest.raises(WeightsFormatError, match="(?i)" + re.escape(f"the file holds {describe(generator)}")):
        build("dcgan_g", image_size=32, nz=nz, ngf=ngf, channels=nc, weights=g_path, weights_format="dcgan_example")


def test_files_from_before_torch_0_4_1_load_without_batch_norm_counters(tmp_path):
    torch.manual_seed(0)
    theirs = official.ResnetGenerator(3, 3, ngf=4, norm="batch", n_blocks=2)
    old = {key: value for key, value in theirs.state_dict().items() if not key.endswith("num_batches_tracked")}
    path = _save(theirs, tmp_path / "old.pth", state=old)
    _assert_same(build("resnet_g", ngf=4, n_blocks=2, norm="batch", weights=path, weights_format="cyclegan"), theirs,
                 torch.randn(1, 3, 16, 16))  # fmt: skip
    source = build("torchvision", arch="resnet18", num_classes=10)
    legacy = {key: value for key, value in source.state_dict().items() if not key.endswith("num_batches_tracked")}
    torch.save(legacy, tmp_path / "resnet18.pth")
    build(
        "torchvision", arch="resnet18", num_classes=10, weights=tmp_path / "resnet18.pth", weights_format="torchvision"
    )


def test_files_of_another_layout_or_content_are_refused_by_name(tmp_path):
    torch.manual_seed(0)
    instance = _save(official.ResnetGenerator(3, 3, ngf=4, norm="instance", n_blocks=2), tmp_path / "instance.pth")
    # The official no-norm convs have no bias: an instance-norm file's biases do not fit, they are not dropped.
    with pytest.raises(WeightsFormatError, match=r"no place for .*model.1.bias.*norm='instance'"):
        build("resnet_g", ngf=4, n_blocks=2, norm="none", weights=instance, weights_format="cyclegan")
    patchgan = _save(official.NLayerDiscriminator(6, ndf=4, n_layers=2, norm="batch"), tmp_path / "D.pth")
    with pytest.raises(WeightsFormatError, match="no spectral norm: build the model with spectral_norm=False"):
        build("patchgan_d", in_channels=6, ndf=4, n_layers=2, spectral_norm=True, weights=patchgan,
              weights_format="cyclegan")  # fmt: skip
    state = torch.load(instance, weights_only=True)
    torch.save({**state, "model.1.weight": 3}, tmp_path / "not_tensors.pth")
    with pytest.raises(WeightsFormatError, match="not a state dict of tensors: .*model.1.weight holds a int"):
        build("resnet_g", ngf=4, n_blocks=2, weights=tmp_path / "not_tensors.pth", weights_format="cyclegan")
    torch.save({"epoch": 3, "state_dict": state}, tmp_path / "checkpoint.pth")
    with pytest.raises(
        WeightsFormatError, match=r"checkpoint holding state_dict.*torch.save\(checkpoint\['state_dict'\]"
    ):
        build("resnet_g", ngf=4, n_blocks=2, weights=tmp_path / "checkpoint.pth", weights_format="cyclegan")
