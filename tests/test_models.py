"""The model zoo: shapes and ranges at two widths, taps, MACs ratios, cost() against hand counts, errors."""

import pytest
import torch
from torch import nn

import gankd.models as models
from gankd.models import build, cost, example_inputs, feature_layers

# (name, options at a wide and a narrow width, inputs, expected output shape). Small sizes keep this fast.
CASES = [
    ("dcgan_g", {"image_size": 32}, "ngf", (8, 4), lambda: (torch.randn(2, 100),), (2, 3, 32, 32)),
    ("dcgan_g", {"image_size": 64, "channels": 1}, "ngf", (8, 4), lambda: (torch.randn(2, 100),), (2, 1, 64, 64)),
    ("dcgan_g", {"image_size": 32, "num_classes": 10, "nz": 16}, "ngf", (8, 4),
     lambda: (torch.randn(2, 16), torch.tensor([3, 7])), (2, 3, 32, 32)),
    ("resnet_g", {"n_blocks": 2}, "ngf", (8, 4), lambda: (torch.rand(2, 3, 32, 32) * 2 - 1,), (2, 3, 32, 32)),
    ("resnet_g", {"n_blocks": 2, "norm": "batch", "in_channels": 1}, "ngf", (8, 4),
     lambda: (torch.rand(2, 1, 16, 16) * 2 - 1,), (2, 3, 16, 16)),
    ("resnet_g", {"n_blocks": 3, "upscale": 4}, "ngf", (8, 4), lambda: (torch.rand(2, 3, 8, 8) * 2 - 1,),
     (2, 3, 32, 32)),
    ("resnet_g", {"n_blocks": 1, "n_downsampling": 0, "upscale": 2, "norm": "none"}, "ngf", (8, 4),
     lambda: (torch.rand(2, 3, 6, 10),), (2, 3, 12, 20)),
    ("dcgan_d", {"image_size": 32}, "ndf", (8, 4), lambda: (torch.randn(3, 3, 32, 32),), (3,)),
    ("dcgan_d", {"image_size": 64, "spectral_norm": True, "norm": "none", "num_classes": 5}, "ndf", (8, 4),
     lambda: (torch.randn(3, 3, 64, 64), torch.tensor([0, 4, 2])), (3,)),
    ("patchgan_d", {}, "ndf", (8, 4), lambda: (torch.randn(2, 3, 64, 64),), (2, 1, 6, 6)),
    ("patchgan_d", {"in_channels": 6, "n_layers": 2, "norm": "instance", "spectral_norm": True}, "ndf", (8, 4),
     lambda: (torch.randn(2, 6, 32, 32),), (2, 1, 6, 6)),
    ("cifar_resnet", {"depth": 8, "num_classes": 10}, "width", (2, 1), lambda: (torch.randn(2, 3, 32, 32),), (2, 10)),
    ("cifar_resnet", {"depth": 14, "in_channels": 1, "num_classes": 7, "stem_channels": 8}, "width", (2, 1),
     lambda: (torch.randn(2, 1, 16, 16),), (2, 7)),
    ("small_cnn", {}, "width", (8, 4), lambda: (torch.randn(2, 1, 32, 32),), (2, 10)),
    ("torchvision", {"num_classes": 10}, "arch", ("resnet18", "mobilenet_v3_small"),
     lambda: (torch.randn(2, 3, 64, 64),), (2, 10)),
]  # fmt: skip

GENERATORS = {"dcgan_g", "resnet_g"}


def tapped_features(model: nn.Module, inputs: tuple) -> dict[str, torch.Tensor]:
    seen = {}
    hooks = [
        model.get_submodule(path).register_forward_hook(lambda m, i, o, path=path: seen.__setitem__(path, o))
        for path in feature_layers(model)
    ]
    with torch.no_grad():
        model(*inputs)
    for hook in hooks:
        hook.remove()
    return seen


def case_id(case) -> str:
    name, options, *_ = case
    return name + "-" + "-".join(f"{key}={value}" for key, value in options.items())


@pytest.mark.parametrize("case", CASES, ids=[case_id(case) for case in CASES])
def test_every_model_builds_at_two_widths_with_the_expected_outputs(case):
    name, options, width_option, widths, make_inputs, expected_shape = case
    torch.manual_seed(0)
    inputs = make_inputs()
    taps_by_width = []
    for width in widths:
        model = build(name, **options, **{width_option: width}).eval()
        with torch.no_grad():
            output = model(*inputs)
        assert output.shape == expected_shape
        assert torch.isfinite(output).all()
        assert output.std() > 0  # inputs reach the output
        if name in GENERATORS:
            assert output.min() >= -1 and output.max() <= 1
        # Every declared tap resolves and a forward hook on it sees a feature map of this batch.
        seen = tapped_features(model, inputs)
        assert list(seen) == list(feature_layers(model)) and len(seen) >= 2
        assert all(tensor.shape[0] == inputs[0].shape[0] for tensor in seen.values())
        taps_by_width.append({path: tensor.shape[1] for path, tensor in seen.items()})
    if width_option != "arch":  # the taps' channels scale with the width (distillation adapters rely on it)
        wide, narrow = taps_by_width
        assert all(wide[path] * widths[1] == narrow[path] * widths[0] for path in wide)
    assert sum(p.numel() for p in build(name, **options, **{width_option: widths[1]}).parameters()) < sum(
        p.numel() for p in build(name, **options, **{width_option: widths[0]}).parameters()
    )


def test_conditional_generator_and_discriminator_use_the_labels():
    torch.manual_seed(0)
    generator = build("dcgan_g", image_size=32, ngf=8, num_classes=10).eval()
    discriminator = build("dcgan_d", image_size=32, ndf=8, num_classes=10).eval()
    noise = torch.randn(2, 100)
    with torch.no_grad():
        images_a = generator(noise, torch.tensor([1, 2]))
        images_b = generator(noise, torch.tensor([5, 2]))
        assert not torch.allclose(images_a[0], images_b[0]) and torch.allclose(images_a[1], images_b[1])
        logits_a = discriminator(images_a, torch.tensor([1, 2]))
        logits_b = discriminator(images_a, torch.tensor([5, 2]))
        assert logits_a[0] != logits_b[0] and logits_a[1] == logits_b[1]
    with pytest.raises(ValueError, match="class-conditional"):
        generator(noise)
    with pytest.raises(ValueError, match="class-conditional"):
        discriminator(images_a)
    with pytest.raises(ValueError, match="unconditional"):
        build("dcgan_g", image_size=32, ngf=4)(noise, torch.tensor([1, 2]))


def meta_cost(name: str, **options) -> dict[str, int]:
    with torch.device("meta"):
        model = build(name, **options)
        inputs = example_inputs(model)
    return cost(model, *inputs)


@pytest.mark.parametrize(
    ("name", "teacher", "student", "low", "high"),
    [
        ("dcgan_g", {"ngf": 64}, {"ngf": 16}, 13.0, 16.0),
        ("dcgan_g", {"ngf": 64, "image_size": 32, "channels": 1}, {"ngf": 16, "image_size": 32, "channels": 1}, 13, 16),
        ("resnet_g", {"ngf": 64}, {"ngf": 16}, 14.0, 16.0),
        # At 4× upscale the 7×7 output conv at full resolution, linear in ngf, weighs more: about 11×.
        ("resnet_g", {"ngf": 64, "upscale": 4}, {"ngf": 16, "upscale": 4}, 10.0, 12.0),
        ("dcgan_d", {"ndf": 64}, {"ndf": 16}, 13.0, 16.0),
        ("patchgan_d", {"ndf": 64}, {"ndf": 16}, 14.0, 16.0),
        ("cifar_resnet", {"width": 4}, {"width": 1}, 15.0, 16.0),
        ("small_cnn", {"width": 32}, {"width": 8}, 14.0, 16.0),
    ],
)
def test_a_quarter_width_student_needs_about_sixteen_times_fewer_macs(name, teacher, student, low, high):
    ratio = meta_cost(name, **teacher)["macs"] / meta_cost(name, **student)["macs"]
    assert low <= ratio <= high


def test_resnet_generator_macs_match_a_hand_count_at_the_cyclegan_size():
    # CycleGAN's generator at 256×256, ngf=64, 9 blocks: convs and transposed convs, MACs = k·k·Cin·Cout·(input
    # positions for a transposed conv, output positions for a conv).
    down = 49 * 3 * 64 * 256**2 + 9 * 64 * 128 * 128**2 + 9 * 128 * 256 * 64**2
    blocks = 9 * 2 * (9 * 256 * 256 * 64**2)
    up = 9 * 256 * 128 * 64**2 + 9 * 128 * 64 * 128**2
    to_image = 49 * 64 * 3 * 256**2
    counted = meta_cost("resnet_g")
    assert counted["macs"] == down + blocks + up + to_image
    assert counted["params"] == 11_378_179  # the CycleGAN/pix2pix resnet_9blocks generator


def test_cifar_resnet_presets_match_the_published_sizes():
    assert meta_cost("resnet8x4")["params"] == 1_233_540
    assert meta_cost("resnet32x4")["params"] == 7_433_860
    assert (
        build("cifar_resnet", depth=8, width=4, stem_channels=32).state_dict().keys()
        == build("resnet8x4").state_dict().keys()
    )


def test_cost_matches_a_hand_count_on_a_small_conv_net():
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),  # 8·8 positions × 8 out × 3·3·3 = 13,824 MACs; 8·27 + 8 = 224 params
        nn.BatchNorm2d(8),  # 16 params, no MACs counted
        nn.ReLU(),
        nn.ConvTranspose2d(8, 4, 4, 2, 1, bias=False),  # 8·8 input positions × 8 in × 4 out × 16 = 32,768; 512 params
        nn.Flatten(),
        nn.Linear(4 * 16 * 16, 10),  # 1024 × 10 = 10,240 MACs; 10,250 params
    )
    images = torch.randn(2, 3, 8, 8)
    running_mean = model[1].running_mean.clone()
    counted = cost(model, images)
    assert counted == {"params": 224 + 16 + 512 + 10_250, "macs": 2 * (13_824 + 32_768 + 10_240)}
    assert model.training and torch.equal(model[1].running_mean, running_mean)
    assert cost(model, images[:1])["macs"] == counted["macs"] // 2


def test_attention_is_counted_on_the_cpu_as_on_the_meta_device():
    # In eval mode under no_grad, CPU attention takes fused kernels the FLOP counter has no formula for.
    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.mha = nn.MultiheadAttention(32, 4, batch_first=True)

        def forward(self, x):
            attended = self.mha(x, x, x, need_weights=False)[0]
            return nn.functional.scaled_dot_product_attention(attended[:, None], x[:, None], x[:, None])

    tokens = torch.randn(2, 64, 32)
    # Projections: 4 linear layers 32 -> 32 on 128 tokens; attention: QK^T and AV, 2 x 128 x 64 x 32 each, twice.
    expected = 4 * 128 * 32 * 32 + 2 * (2 * 2 * 64 * 64 * 32)
    model = Attention()
    assert cost(model, tokens)["macs"] == expected
    with torch.device("meta"):
        assert cost(Attention(), torch.empty(2, 64, 32))["macs"] == expected
    assert torch.backends.mha.get_fastpath_enabled()  # restored


def test_spectral_norm_bounds_the_largest_singular_value():
    torch.manual_seed(0)
    discriminator = build("patchgan_d", ndf=8, n_layers=2, spectral_norm=True, norm="none")
    images = torch.randn(2, 3, 32, 32)
    for _ in range(30):  # each training-mode forward runs one power iteration
        discriminator(images)
    convs = [m for m in discriminator.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 4
    for conv in convs:
        sigma = torch.linalg.matrix_norm(conv.weight.detach().flatten(1), ord=2)
        assert sigma == pytest.approx(1.0, abs=0.05)
    plain = build("patchgan_d", ndf=8, n_layers=2, norm="none")
    assert cost(plain, images)["macs"] == cost(discriminator, images)["macs"]


def test_torchvision_weights_load_from_a_local_file(tmp_path):
    torch.manual_seed(0)
    source = build("torchvision", arch="resnet18", num_classes=10).eval()
    path = tmp_path / "resnet18.pt"
    torch.save(source.state_dict(), path)
    loaded = build("torchvision", arch="resnet18", num_classes=10, weights_path=path).eval()
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(images), source(images))
    assert feature_layers(loaded) == ("layer1", "layer2", "layer3", "layer4")
    same = build("torchvision", arch="resnet18", num_classes=10, weights=path, weights_format="torchvision").eval()
    with torch.no_grad():
        assert torch.equal(same(images), source(images))
    with pytest.raises(
        ValueError,
        match=r"does not fit ResNet: 2 of its \d+ tensors have other shapes \(fc.weight is \[10, 512\] in the file "
        r"and \[1000, 512\] in the model",
    ):
        build("torchvision", arch="resnet18", weights_path=path)
    with pytest.raises(ValueError, match="missing.pt does not exist"):
        build("torchvision", arch="resnet18", weights_path=tmp_path / "missing.pt")
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="garbage.pt"):
        build("torchvision", arch="resnet18", weights_path=tmp_path / "garbage.pt")


@pytest.mark.parametrize(
    ("arch", "device", "taps"),
    [("vgg11", "meta", ("features.0", "features.20")), ("vit_b_16", "meta", ("encoder.layers.encoder_layer_0",)),
     ("regnet_y_400mf", "cpu", ("trunk_output.block1", "trunk_output.block4"))],  # RegNet's init needs real data
)  # fmt: skip
def test_torchvision_taps_follow_the_architecture(arch, device, taps):
    with torch.device(device):
        layers = feature_layers(build("torchvision", arch=arch))
    assert set(taps) <= set(layers)


def test_names_and_errors_name_what_was_wrong():
    assert {"dcgan_g", "resnet_g", "dcgan_d", "patchgan_d", "cifar_resnet", "resnet8x4", "resnet32x4", "small_cnn",
            "torchvision", "unet_g"} == set(models.names())  # fmt: skip
    with pytest.raises(ValueError, match=r"unknown model 'resnet_gg'; valid names: .*dcgan_g.*resnet_g"):
        build("resnet_gg")
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'ngff'.*valid options: .*ngf"):
        build("resnet_g", ngff=16)
    with pytest.raises(TypeError, match="ngf must be an int, got str"):
        build("dcgan_g", ngf="64")
    with pytest.raises(TypeError, match="ngf must be an int, got bool"):
        build("resnet_g", ngf=True)
    with pytest.raises(TypeError, match="spectral_norm must be a bool"):
        build("patchgan_d", spectral_norm="yes")
    with pytest.raises(ValueError, match="norm must be one of"):
        build("resnet_g", norm="layer")
    with pytest.raises(ValueError, match="depth must be 6n"):
        build("cifar_resnet", depth=10)
    with pytest.raises(ValueError, match="upscale must be a power of two"):
        build("resnet_g", upscale=3)
    with pytest.raises(ValueError, match="image_size must be a power of two"):
        build("dcgan_g", image_size=48)
    with pytest.raises(ValueError, match=r"unknown torchvision classification model 'resnet19'.*resnet18"):
        build("torchvision", arch="resnet19")
    with pytest.raises(TypeError, match="model name must be a str"):
        build(3)
    with pytest.raises(ValueError, match="divisible by 2"):
        build("resnet_g", ngf=4, n_blocks=1)(torch.randn(1, 3, 30, 32))
    with pytest.raises(ValueError, match=r"images must be \[N, 3, 32, 32\]"):
        build("dcgan_d", image_size=32, ndf=4)(torch.randn(1, 3, 64, 64))
    with pytest.raises(ValueError, match="declares no feature_layers"):
        feature_layers(nn.Linear(2, 2))


def test_residual_super_resolution_starts_from_bicubic():
    import torch.nn.functional as F

    model = models.build("resnet_g", ngf=4, n_blocks=1, n_downsampling=1, upscale=4, norm="batch", residual=True)
    low_res = torch.rand(2, 3, 8, 8) * 2 - 1
    with torch.no_grad():
        for parameter in model.to_image.parameters():
            parameter.zero_()  # the correction is tanh(0) = 0
        output = model.eval()(low_res)
    assert torch.allclose(output, F.interpolate(low_res, scale_factor=4, mode="bicubic"))
    with pytest.raises(ValueError, match="residual=True needs in_channels == out_channels"):
        models.build("resnet_g", in_channels=1, out_channels=3, residual=True)
