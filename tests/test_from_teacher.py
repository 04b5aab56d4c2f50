"""init_from_teacher: the student is the teacher pruned to its widths, channels chosen by group L1 magnitude."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import gankd.models as models
from gankd.models.from_teacher import init_from_teacher

pytest.importorskip("torch_pruning")


def _pair(name: str, teacher_options: dict, student_options: dict, seed: int = 0) -> tuple[nn.Module, nn.Module]:
    """Teacher and student in eval mode; the teacher's norms get random scales, shifts and running statistics so
    that every parameter takes part in the importance and in the outputs."""
    torch.manual_seed(seed)
    teacher = models.build(name, **teacher_options).eval()
    with torch.no_grad():
        for module in teacher.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0, 0.1)
                module.running_mean.normal_(0, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    return teacher, models.build(name, **student_options).eval()


def _out_dim(layer: nn.Module) -> int:
    return 1 if isinstance(layer, nn.ConvTranspose2d) else 0


def _in_dim(layer: nn.Module) -> int:
    return 0 if isinstance(layer, nn.ConvTranspose2d) else 1


def _norm_after(model: nn.Module, conv_path: str) -> str | None:
    """The path of the module after `conv_path` in its Sequential if that is a norm layer (as in every zoo family)."""
    parent, _, index = conv_path.rpartition(".")
    siblings = model.get_submodule(parent) if parent else model
    if not index.isdigit() or int(index) + 1 >= len(siblings):
        return None
    follower = siblings[int(index) + 1]
    return f"{parent}.{int(index) + 1}" if isinstance(follower, (nn.BatchNorm2d, nn.InstanceNorm2d)) else None


# ---- (1) the kept channels are the highest group-L1 ones, and the student holds exactly their weights ----


def _group_l1(teacher: nn.Module, producer: str, consumer: str, norm: str | None = None) -> torch.Tensor:
    """Mean of the producer's output-filter L1 norms, its batch norm's |scale| and the consumer's input-slice
    L1 norms: torch-pruning's group L1 importance for a chain link with no other coupling. `norm`: the batch
    norm's path where it is not the next module of the producer's Sequential."""
    producer_layer, consumer_layer = teacher.get_submodule(producer), teacher.get_submodule(consumer)
    out_dim, in_dim = _out_dim(producer_layer), _in_dim(consumer_layer)
    terms = [
        producer_layer.weight.abs().sum([d for d in range(producer_layer.weight.dim()) if d != out_dim]),
        consumer_layer.weight.abs().sum([d for d in range(consumer_layer.weight.dim()) if d != in_dim]),
    ]
    norm = norm or _norm_after(teacher, producer)
    norm_layer = teacher.get_submodule(norm) if norm else None
    if isinstance(norm_layer, nn.BatchNorm2d):
        terms.append(norm_layer.weight.abs())
    return torch.stack(terms).mean(0)


def _top(scores: torch.Tensor, count: int) -> list[int]:
    return sorted(torch.argsort(scores, descending=True, stable=True)[:count].tolist())


# The conv/linear layers of the sequential families, in order.
CHAINS = {
    "small_cnn": lambda model: ["conv1.0", "conv2.0", "conv3.0", "fc"],
    "dcgan_g": lambda model: ["stem.0", *(f"blocks.{i}.0" for i in range(len(model.blocks))), "to_image.0"],
}


@pytest.mark.parametrize(
    ("name", "teacher_options", "student_options"),
    [
        ("small_cnn", {"width": 32}, {"width": 8}),
        ("small_cnn", {"width": 32, "norm": "none"}, {"width": 8, "norm": "none"}),
        ("dcgan_g", {"ngf": 64, "image_size": 32}, {"ngf": 16, "image_size": 32}),
        ("dcgan_g", {"ngf": 64, "image_size": 32, "num_classes": 10}, {"ngf": 16, "image_size": 32, "num_classes": 10}),
    ],
)
def test_student_holds_the_teachers_highest_group_l1_channels(name, teacher_options, student_options):
    teacher, student = _pair(name, teacher_options, student_options)
    teacher.train().requires_grad_(False)  # a frozen teacher in train mode: traced all the same, left as it was
    teacher_state = copy.deepcopy(teacher.state_dict())
    chain = CHAINS[name](teacher)
    first = student.get_submodule(chain[0])
    expected_first = _top(_group_l1(teacher, chain[0], chain[1]), first.weight.shape[_out_dim(first)])

    inputs = teacher.example_inputs(2)
    report = init_from_teacher(student, teacher, inputs)

    assert report["kept"][chain[0]] == expected_first
    assert report["groups_pruned"] == len(chain) - 1 and report["groups_unchanged"] == 1
    assert report["params_student"] == sum(p.numel() for p in student.parameters()) < report["params_teacher"]
    assert teacher.training and all(torch.equal(teacher_state[k], v) for k, v in teacher.state_dict().items())
    # Every student weight is the teacher's restricted to the kept channels: out along the chain, in from the
    # previous link (the stem's and the head's fixed sides whole). A layer with a bias may then be rescaled
    # per output channel by the recalibration (tested below); the rest is exact.
    student_state = student.state_dict()
    checked = set()
    for index, path in enumerate(chain):
        layer = teacher.get_submodule(path)
        kept_out = report["kept"].get(path, list(range(layer.weight.shape[_out_dim(layer)])))
        weight = layer.weight.index_select(_out_dim(layer), torch.tensor(kept_out))
        if index > 0:
            weight = weight.index_select(_in_dim(layer), torch.tensor(report["kept"][chain[index - 1]]))
        if layer.bias is None:
            assert torch.equal(student_state[f"{path}.weight"], weight), path
        else:
            _assert_rescaled_rows(student_state[f"{path}.weight"], weight, _out_dim(layer), path)
        checked |= {f"{path}.weight", f"{path}.bias"}
        norm_path = _norm_after(teacher, path)
        if norm_path and isinstance(teacher.get_submodule(norm_path), nn.BatchNorm2d):
            norm = teacher.get_submodule(norm_path)
            for key in ("weight", "bias"):  # its running statistics are recalibrated (tested below)
                assert torch.equal(student_state[f"{norm_path}.{key}"], getattr(norm, key)[kept_out]), norm_path
            checked |= {f"{norm_path}.{key}" for key in ("weight", "bias", "running_mean", "running_var")}
    untouched = set(student_state) - checked
    assert all(k.endswith("num_batches_tracked") or k.startswith("label_embedding") for k in untouched), untouched
    if "label_embedding.weight" in student_state:
        assert torch.equal(student_state["label_embedding.weight"], teacher.label_embedding.weight)


def _assert_rescaled_rows(actual: torch.Tensor, expected: torch.Tensor, dim: int, name: str) -> None:
    """`actual` is `expected` with each slice along `dim` multiplied by one number (fitted here)."""
    rows, targets = (tensor.movedim(dim, 0).reshape(tensor.shape[dim], -1) for tensor in (actual, expected))
    scale = (rows * targets).sum(1) / targets.square().sum(1)
    torch.testing.assert_close(rows, scale[:, None] * targets, rtol=1e-5, atol=1e-6, msg=name)


def _outputs(model: nn.Module, inputs: tuple, layer_types=(nn.Conv2d, nn.ConvTranspose2d, nn.Linear)) -> dict:
    """{layer path: its output, channels first, flattened} of one eval-mode forward."""
    outputs = {}
    hooks = [
        module.register_forward_hook(
            lambda module, args, output, path=path: outputs.__setitem__(path, output.movedim(1, 0).flatten(1))
        )
        for path, module in model.named_modules()
        if isinstance(module, layer_types)
    ]
    with torch.no_grad():
        model.eval()(*inputs)
    for hook in hooks:
        hook.remove()
    return outputs


def test_recalibration_gives_hidden_channels_the_teachers_statistics_and_fits_the_output():
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Conv2d(3, 16, 3), nn.ReLU(), nn.Conv2d(16, 16, 3), nn.ReLU(), nn.Conv2d(16, 4, 1))
    student = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 5, 3), nn.ReLU(), nn.Conv2d(5, 4, 1))
    inputs = (torch.randn(8, 3, 12, 12),)
    report = init_from_teacher(student, teacher, inputs)
    assert report["layers_recalibrated"] == 2  # the first conv sees the teacher's inputs and keeps its outputs
    teacher_outputs, student_outputs = _outputs(teacher, inputs), _outputs(student, inputs)
    # The first conv: the teacher's kept filters, exactly. The hidden conv: each kept channel's mean and std.
    assert torch.equal(student_outputs["0"], teacher_outputs["0"][report["kept"]["0"]])
    hidden, target = student_outputs["2"], teacher_outputs["2"][report["kept"]["2"]]
    torch.testing.assert_close(hidden.mean(1), target.mean(1), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(hidden.std(1), target.std(1), rtol=1e-4, atol=1e-5)
    # The output layer: the least-squares fit to the teacher's outputs, so the residual has zero mean and is
    # uncorrelated with the student's output in every channel (and the fit beats the unfitted pruned layer).
    output, target = student_outputs["4"], teacher_outputs["4"]
    residual = target - output
    torch.testing.assert_close(residual.mean(1), torch.zeros(4), rtol=0, atol=1e-5)
    torch.testing.assert_close((residual * (output - output.mean(1, keepdim=True))).mean(1), torch.zeros(4),
                               rtol=0, atol=1e-5)  # fmt: skip


def test_pruned_sparse_relus_stay_alive():
    # Channels that fire rarely (negative mean pre-activation, large spread from many inputs) lose their spread
    # when most inputs are pruned; keeping only the mean would put every one of them under zero, for good.
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 32, 3, padding=1), nn.ReLU(),
                            nn.Conv2d(32, 3, 3, padding=1))  # fmt: skip
    with torch.no_grad():
        teacher[0].bias.fill_(0.5)
        teacher[2].bias.fill_(-2 * teacher[2](teacher[1](teacher[0](torch.randn(4, 3, 16, 16)))).std().item())
    student = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),
                            nn.Conv2d(4, 3, 3, padding=1))  # fmt: skip
    inputs = (torch.randn(16, 3, 16, 16),)
    report = init_from_teacher(student, teacher, inputs)
    fired = {name: (outputs > 0).double().mean(1) for name, outputs in _relu_outputs(teacher, inputs).items()}
    student_fired = (_relu_outputs(student, inputs)["3"] > 0).double().mean(1)
    teacher_fired = fired["3"][report["kept"]["2"]]
    assert teacher_fired.max() < 0.2  # sparse
    torch.testing.assert_close(student_fired, teacher_fired, rtol=0.5, atol=0.02)


def test_batch_norms_keep_scale_and_shift_and_take_running_statistics_that_restore_the_teachers():
    teacher, student = _pair("small_cnn", {"width": 16}, {"width": 4})
    inputs = teacher.example_inputs(8)
    report = init_from_teacher(student, teacher, inputs)
    norms = ("conv1.1", "conv2.1", "conv3.1")
    teacher_outputs = _outputs(teacher, inputs, layer_types=(nn.BatchNorm2d,))
    student_outputs = _outputs(student, inputs, layer_types=(nn.BatchNorm2d,))
    for norm, producer in zip(norms, ("conv1.0", "conv2.0", "conv3.0"), strict=True):
        kept = torch.tensor(report["kept"][producer])
        student_norm, teacher_norm = student.get_submodule(norm), teacher.get_submodule(norm)
        # Train mode normalises with batch statistics: a new scale or shift would survive it, these do not.
        assert torch.equal(student_norm.weight, teacher_norm.weight[kept]), norm
        assert torch.equal(student_norm.bias, teacher_norm.bias[kept]), norm
        output, target = student_outputs[norm], teacher_outputs[norm][kept]
        if norm == "conv1.1":  # its inputs are the teacher's kept channels exactly: nothing to restore
            assert torch.equal(student_norm.running_var, teacher_norm.running_var[kept])
            assert torch.equal(output, target)
        else:  # eval mode: the teacher's per-channel mean and spread, from moved running statistics
            assert not torch.equal(student_norm.running_var, teacher_norm.running_var[kept])
            torch.testing.assert_close(output.mean(1), target.mean(1), rtol=1e-4, atol=1e-4)
            torch.testing.assert_close(output.std(1), target.std(1), rtol=1e-4, atol=1e-4)


def test_a_bias_free_last_layer_leaves_every_recalibrated_layer_hidden():
    # DCGAN's last transposed conv has no bias: the batch norm before it is a hidden layer (the teacher's
    # statistics), not an output layer fitted by least squares.
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Conv2d(3, 16, 3, bias=False), nn.BatchNorm2d(16), nn.ReLU(), nn.Conv2d(16, 16, 3),
                            nn.BatchNorm2d(16), nn.ReLU(), nn.Conv2d(16, 3, 1, bias=False)).eval()  # fmt: skip
    student = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 3),
                            nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 3, 1, bias=False)).eval()  # fmt: skip
    inputs = (torch.randn(8, 3, 12, 12),)
    report = init_from_teacher(student, teacher, inputs)
    teacher_outputs = _outputs(teacher, inputs, layer_types=(nn.BatchNorm2d,))
    output, target = _outputs(student, inputs, layer_types=(nn.BatchNorm2d,))["4"], teacher_outputs["4"]
    target = target[report["kept"]["3"]]
    torch.testing.assert_close(output.mean(1), target.mean(1), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(output.std(1), target.std(1), rtol=1e-4, atol=1e-4)


def _relu_outputs(model: nn.Module, inputs: tuple) -> dict:
    return _outputs(model, inputs, layer_types=(nn.ReLU,))


# ---- (2) at the teacher's width the student is the teacher ----


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("dcgan_g", {"ngf": 8, "image_size": 32, "num_classes": 10}),
        ("resnet_g", {"ngf": 8, "n_blocks": 2, "norm": "batch"}),
        ("small_cnn", {"width": 8}),
        ("cifar_resnet", {"depth": 8, "width": 1, "num_classes": 10}),
    ],
)
def test_equal_widths_give_the_teachers_outputs_exactly(name, options):
    teacher, student = _pair(name, options, options)
    inputs = models.example_inputs(teacher, 2, 32)
    report = init_from_teacher(student, teacher, inputs)
    assert report["groups_pruned"] == 0 and report["kept"] == {}
    assert report["params_student"] == report["params_teacher"]
    with torch.no_grad():
        assert torch.equal(student(*inputs), teacher(*inputs))


# ---- (3) a teacher whose extra channels are zero: the pruned student computes the same function ----
# Each channel space is (producer convs, [(consumer, channel offset in its input)]): every producer writes the
# space (several for a residual stream), every consumer reads it (at an offset behind a concatenation).


def _sequential_spaces(chain: list[str]) -> list:
    return [([producer], [(consumer, 0)]) for producer, consumer in zip(chain[:-1], chain[1:], strict=False)]


def _resnet_g_spaces(model: nn.Module) -> list:
    down = [f"down.{1 + 3 * i}" for i in range(model.n_downsampling + 1)]
    blocks = [f"blocks.{i}.body" for i in range(model.n_blocks)]
    up = [f"up.{3 * i}" for i in range(len(model.up) // 3)] + ["to_image.1"]
    stream = ([down[-1]] + [f"{b}.5" for b in blocks], [(f"{b}.1", 0) for b in blocks] + [(up[0], 0)])
    inner = [([f"{b}.1"], [(f"{b}.5", 0)]) for b in blocks]
    return _sequential_spaces(down) + [stream] + inner + _sequential_spaces(up)


def _cifar_resnet_spaces(model: nn.Module) -> list:
    # Depth 8: one block per stage. A stage's stream is written by the stage's input (the stem, or the first
    # block's shortcut conv) and its block's last conv, and read by its block and the next stage's first block.
    streams = [
        (["stem.0", "layer1.0.body.3"], ["layer1.0.body.0", "layer2.0.body.0", "layer2.0.shortcut.0"]),
        (["layer2.0.body.3", "layer2.0.shortcut.0"], ["layer3.0.body.0", "layer3.0.shortcut.0"]),
        (["layer3.0.body.3", "layer3.0.shortcut.0"], ["fc"]),
    ]
    inner = [([f"layer{stage}.0.body.0"], [(f"layer{stage}.0.body.3", 0)]) for stage in (1, 2, 3)]
    return [(writers, [(reader, 0) for reader in readers]) for writers, readers in streams] + inner


def _unet_g_spaces(model: nn.Module) -> list:
    levels = model.num_downs
    width = [model.get_submodule(f"down.{i}.0").out_channels for i in range(levels)]
    # down.i feeds down.i+1 and, as the skip, the first channels of up.i's input (the innermost: all of it);
    # up.i (i ≥ 1) feeds up.i-1's input behind the skip of down.i-1.
    spaces = [([f"down.{i}.0"], [(f"down.{i + 1}.0", 0), (f"up.{i}.1", 0)]) for i in range(levels - 1)]
    spaces.append(([f"down.{levels - 1}.0"], [(f"up.{levels - 1}.1", 0)]))
    spaces += [([f"up.{i}.1"], [(f"up.{i - 1}.1", width[i - 1])]) for i in range(1, levels)]
    return spaces


def _zero_extra_channels(teacher: nn.Module, student: nn.Module, spaces: list, seed: int) -> dict[str, list[int]]:
    """Zero, in each space, a random set of as many channels as the student lacks: the producers' filters,
    biases and norm parameters and the consumers' input slices. Returns each space's first producer → the
    channels that should be kept."""
    generator = torch.Generator().manual_seed(seed)
    expected_kept = {}
    with torch.no_grad():
        for producers, consumers in spaces:
            first = teacher.get_submodule(producers[0])
            teacher_count = first.weight.shape[_out_dim(first)]
            student_count = student.get_submodule(producers[0]).weight.shape[_out_dim(first)]
            order = torch.randperm(teacher_count, generator=generator)
            dropped = order[student_count:]
            expected_kept[producers[0]] = sorted(order[:student_count].tolist())
            for path in producers:
                layer = teacher.get_submodule(path)
                norm_path = _norm_after(teacher, path)
                norm = teacher.get_submodule(norm_path) if norm_path else None
                layer.weight.index_fill_(_out_dim(layer), dropped, 0.0)
                for tensor in (layer.bias, getattr(norm, "weight", None), getattr(norm, "bias", None)):
                    if tensor is not None:
                        tensor.index_fill_(0, dropped, 0.0)
            for path, offset in consumers:
                layer = teacher.get_submodule(path)
                layer.weight.index_fill_(_in_dim(layer), dropped + offset, 0.0)
    return expected_kept


def _width_pair(name: str, teacher_width: dict, student_width: dict, image_size: int | None = None, **options):
    return name, {**options, **teacher_width}, {**options, **student_width}, image_size


ZEROED_CASES = [
    _width_pair("small_cnn", {"width": 16}, {"width": 4}, 32, norm="none"),
    _width_pair("small_cnn", {"width": 16}, {"width": 4}, 32),
    *(_width_pair("dcgan_g", {"ngf": 16}, {"ngf": 4}, image_size=32, num_classes=10, norm=norm)
      for norm in ("batch", "instance", "none")),
    _width_pair("dcgan_g", {"ngf": 16}, {"ngf": 4}, image_size=64),
    *(_width_pair("resnet_g", {"ngf": 16}, {"ngf": 4}, 32, n_blocks=2, norm=norm, **extra) for norm, extra in [
        ("instance", {}),
        ("batch", {"n_downsampling": 1}),
        ("none", {"n_downsampling": 1}),
        ("instance", {"n_downsampling": 1, "upscale": 4, "residual": True}),
        ("none", {"upscale": 4, "residual": True}),
    ]),
    _width_pair("cifar_resnet", {"width": 2}, {"width": 1}, 32, depth=8, num_classes=10),
]  # fmt: skip


def _spaces(name: str, teacher: nn.Module) -> list:
    if name in CHAINS:
        return _sequential_spaces(CHAINS[name](teacher))
    return {"resnet_g": _resnet_g_spaces, "cifar_resnet": _cifar_resnet_spaces, "unet_g": _unet_g_spaces}[name](teacher)


def _check_zeroed_teacher(name, teacher_options, student_options, image_size):
    teacher, student = _pair(name, teacher_options, student_options, seed=1)
    expected_kept = _zero_extra_channels(teacher, student, _spaces(name, teacher), seed=2)
    inputs = models.example_inputs(teacher, 2, image_size)
    report = init_from_teacher(student, teacher, inputs)
    # Each space was pruned once, from whichever of its producers torch-pruning took as the root.
    assert report["groups_pruned"] == len(expected_kept)
    assert sorted(map(tuple, report["kept"].values())) == sorted(map(tuple, expected_kept.values()))
    with torch.no_grad():
        torch.testing.assert_close(student(*inputs), teacher(*inputs), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("name", "teacher_options", "student_options", "image_size"), ZEROED_CASES)
def test_pruning_a_teacher_with_zeroed_extra_channels_keeps_its_outputs(
    name, teacher_options, student_options, image_size
):
    _check_zeroed_teacher(name, teacher_options, student_options, image_size)


@pytest.mark.parametrize("norm", ["batch", "instance", "none"])
def test_unet_g_skip_concatenations(norm):
    if "unet_g" not in models.names():
        pytest.skip("unet_g is not registered yet")
    options = {"num_downs": 5, "norm": norm, "dropout": True}
    _check_zeroed_teacher("unet_g", {**options, "ngf": 16}, {**options, "ngf": 4}, 32)


@pytest.mark.filterwarnings("error")
def test_instance_norms_without_weights_take_the_pruned_width():
    # torch-pruning has no weights to cut in an affine-free instance norm: left at the teacher's num_features,
    # it warned at every recalibration forward ("input's size at dim=1 does not match num_features").
    torch.manual_seed(0)
    teacher = models.build("resnet_g", ngf=8, n_blocks=1, norm="instance")
    student = models.build("resnet_g", ngf=4, n_blocks=1, norm="instance")
    init_from_teacher(student, teacher, torch.randn(2, 3, 16, 16))


class _DeadBranch(nn.Module):
    """A layer whose output is computed and dropped (a StyleGAN-style to-image conv that is not summed in)."""

    def __init__(self, width: int):
        super().__init__()
        self.stem, self.unused, self.head = (
            nn.Conv2d(1, width, 3, padding=1),
            nn.Conv2d(width, 1, 1),
            nn.Linear(width, 2),
        )

    def forward(self, images):
        features = torch.relu(self.stem(images))
        self.unused(features)
        return self.head(features.mean((2, 3)))


def test_a_layer_the_output_never_sees_is_named_not_crashed_on():
    # The dependency graph follows the output back: it cannot prune `unused`, which then misfits the student.
    with pytest.raises(ValueError, match=r"unused.weight is \(1, 8, 1, 1\) but the student's is \(1, 2, 1, 1\).*never"):
        init_from_teacher(_DeadBranch(2), _DeadBranch(8), torch.randn(2, 1, 8, 8))


def test_torchvision_wide_resnet50_2_to_resnet50():
    teacher, student = _pair(
        "torchvision", {"arch": "wide_resnet50_2", "num_classes": 10}, {"arch": "resnet50", "num_classes": 10}
    )
    expected = _top(_group_l1(teacher, "layer1.0.conv1", "layer1.0.conv2", "layer1.0.bn1"), 64)
    report = init_from_teacher(student, teacher, models.example_inputs(teacher, 1, 64))
    # The bottlenecks' two inner convs halve; the residual streams (conv3, downsample) are equal and stay whole.
    assert report["groups_pruned"] == 32 and report["kept"]["layer1.0.conv1"] == expected
    kept_conv1, kept_conv2 = (torch.tensor(report["kept"][f"layer1.0.conv{i}"]) for i in (1, 2))
    block, teacher_block = student.layer1[0], teacher.layer1[0]
    assert torch.equal(block.conv1.weight, teacher_block.conv1.weight[kept_conv1])
    assert torch.equal(block.bn1.running_var, teacher_block.bn1.running_var[kept_conv1])
    assert torch.equal(block.conv2.weight, teacher_block.conv2.weight[kept_conv2][:, kept_conv1])
    assert torch.equal(block.conv3.weight, teacher_block.conv3.weight[:, kept_conv2])
    _assert_rescaled_rows(student.fc.weight, teacher.fc.weight, 0, "fc")  # the output layer: fitted per class


# ---- (4) errors ----


@pytest.mark.parametrize(
    ("name", "teacher_options", "student_name", "student_options", "message"),
    [
        ("small_cnn", {"width": 8}, "cifar_resnet", {"depth": 8, "width": 1}, r"not the same architecture.*conv1\.0"
         r".*student_init: teacher needs the teacher's architecture at a smaller width"),
        ("small_cnn", {"width": 8}, "small_cnn", {"width": 16}, r"student conv1\.0\.weight is \(16, 1, 3, 3\), wider"),
        ("dcgan_g", {"ngf": 8, "image_size": 16}, "dcgan_g", {"ngf": 4, "image_size": 16, "nz": 64},
         r"after pruning the teacher, stem\.0\.weight is \(100, 8, 4, 4\) but the student's is \(64, 8, 4, 4\)"),
        ("dcgan_d", {"ndf": 8, "spectral_norm": True}, "dcgan_d", {"ndf": 4, "spectral_norm": True},
         r"teacher layer \S+ has parametrized weights \(e\.g\. spectral norm\)"),
        # Norms without weights hold the same keys as no norm at all.
        ("resnet_g", {"ngf": 8, "n_blocks": 1}, "resnet_g", {"ngf": 4, "n_blocks": 1, "norm": "none"},
         r"student layer blocks\.0\.body\.2 is Identity but the teacher's is InstanceNorm2d"),
        ("resnet_g", {"ngf": 8, "n_blocks": 1, "norm": "none"}, "resnet_g", {"ngf": 8, "n_blocks": 1},
         r"student layer blocks\.0\.body\.2 is InstanceNorm2d but the teacher's is Identity"),
        # The output layer is not a hidden width: fewer classes or image channels are refused, not pruned to.
        ("small_cnn", {"width": 8, "num_classes": 10}, "small_cnn", {"width": 4, "num_classes": 5},
         r"the student's output is \(5,\) but the teacher's \(10,\) \(per item\): pruning removes hidden"),
        ("resnet_g", {"ngf": 8, "n_blocks": 1}, "resnet_g", {"ngf": 4, "n_blocks": 1, "out_channels": 1},
         r"the student's output is \(1, 256, 256\) but the teacher's \(3, 256, 256\)"),
    ],
)  # fmt: skip
def test_errors_say_what_is_wrong(name, teacher_options, student_name, student_options, message):
    teacher, student = models.build(name, **teacher_options), models.build(student_name, **student_options)
    before = copy.deepcopy(student.state_dict())
    with pytest.raises(ValueError, match=message):
        init_from_teacher(student, teacher, models.example_inputs(teacher))
    assert all(torch.equal(before[key], value) for key, value in student.state_dict().items())


def test_teacher_and_student_must_read_their_inputs_alike():
    teacher, student = models.build("small_cnn", width=8), models.build("small_cnn", width=4)
    models.set_input_convention(teacher, mean=[0.5], std=[0.25])
    with pytest.raises(ValueError, match=r"the student's input convention is none \(images in \[-1, 1\]\) but the "
                       r"teacher's \{'mean': \[0\.5\], 'std': \[0\.25\], 'size': 0\}"):  # fmt: skip
        init_from_teacher(student, teacher, models.example_inputs(teacher, 2, 16))
    models.set_input_convention(student, mean=[0.5], std=[0.25])
    assert init_from_teacher(student, teacher, models.example_inputs(teacher, 2, 16))["groups_pruned"] > 0


def test_hook_based_spectral_norm_is_named():
    teacher, student = models.build("dcgan_d", ndf=8), models.build("dcgan_d", ndf=4)
    nn.utils.spectral_norm(next(layer for layer in teacher.modules() if isinstance(layer, nn.Conv2d)))
    with pytest.raises(ValueError, match=r"teacher layer \S+ has parametrized weights .*remove_spectral_norm"):
        init_from_teacher(student, teacher, models.example_inputs(teacher, 2))


class _SubPixel(nn.Module):
    """ESPCN-style 2x upsampling (PixelShuffle), which torch-pruning's dependency graph cannot prune."""

    def __init__(self, width: int):
        super().__init__()
        self.head, self.up = nn.Conv2d(3, width, 3, padding=1), nn.Conv2d(width, 4 * width, 3, padding=1)
        self.shuffle, self.tail = nn.PixelShuffle(2), nn.Conv2d(width, 3, 3, padding=1)

    def forward(self, x):
        return self.tail(torch.relu(self.shuffle(self.up(torch.relu(self.head(x))))))


def test_an_op_torch_pruning_cannot_handle_gets_a_named_error():
    student = _SubPixel(4)
    before = copy.deepcopy(student.state_dict())
    with pytest.raises(ValueError, match=r"torch-pruning cannot prune the teacher _SubPixel \(IndexError: .*\); an op "
                       r"it does not handle \(such as PixelShuffle\).*use student_init: random"):  # fmt: skip
        init_from_teacher(student, _SubPixel(16), torch.randn(2, 3, 8, 8))
    assert all(torch.equal(before[key], value) for key, value in student.state_dict().items())
