"""gankd.distill.taps: element selectors on modules that return tuples or lists (StyleGAN-style `(x, img)`
blocks), every error with its message, and the Distiller's feature terms on selector paths."""

import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gankd.distill import Distiller, FeatureTaps, declared_channels
from gankd.distill.taps import split_tap_path
from gankd.kernels import feature_match_ref


class SynthesisBlock(nn.Module):
    """A StyleGAN-like block: doubles the resolution, returns its features and the running image `(x, img)`."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.torgb = nn.Conv2d(out_channels, 3, 1)

    def forward(self, x, img=None):
        x = F.leaky_relu(self.conv(F.interpolate(x, scale_factor=2.0)), 0.2)
        rgb = self.torgb(x)
        img = rgb if img is None else F.interpolate(img, scale_factor=2.0) + rgb
        return x, img


class Synthesis(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.b8, self.b16 = SynthesisBlock(width, width), SynthesisBlock(width, width)

    def forward(self, x):
        x, img = self.b8(x)
        x, img = self.b16(x, img)
        return img


class ToyGenerator(nn.Module):
    """noise [N, 8] → image [N, 3, 16, 16] through a mapping layer and two tuple-returning blocks."""

    def __init__(self, width: int):
        super().__init__()
        self.width = width
        self.mapping = nn.Linear(8, width * 16)
        self.synthesis = Synthesis(width)

    def forward(self, noise):
        return torch.tanh(self.synthesis(self.mapping(noise).view(-1, self.width, 4, 4)))


class Pair(nn.Module):
    """Returns a nested output: (tensor, (tensor, None))."""

    def forward(self, x):
        return x + 1, (x * 2, None)


def by_hand(generator, noise):
    """The blocks' outputs, run module by module (no hooks)."""
    x = generator.mapping(noise).view(-1, generator.width, 4, 4)
    b8 = generator.synthesis.b8(x)
    return {"b8": b8, "b16": generator.synthesis.b16(*b8)}


def no_hooks(module):
    return all(not m._forward_hooks for m in module.modules())


def test_selectors_tap_each_element_of_a_tuple_output():
    torch.manual_seed(0)
    generator, noise = ToyGenerator(4).eval(), torch.randn(2, 8)
    expected = by_hand(generator, noise)
    paths = ["synthesis.b8[0]", "synthesis.b8[1]", "synthesis.b16[-1]", "mapping"]
    with FeatureTaps(generator, paths) as taps:
        generator(noise)
    assert no_hooks(generator)
    assert taps.paths == tuple(paths) and set(taps.features) == set(paths)
    assert taps["synthesis.b8[0]"].shape == (2, 4, 8, 8) and taps["synthesis.b8[1]"].shape == (2, 3, 8, 8)
    torch.testing.assert_close(taps["synthesis.b8[0]"], expected["b8"][0], rtol=0, atol=0)
    torch.testing.assert_close(taps["synthesis.b8[1]"], expected["b8"][1], rtol=0, atol=0)
    torch.testing.assert_close(taps["synthesis.b16[-1]"], expected["b16"][1], rtol=0, atol=0)
    assert taps["mapping"].shape == (2, 64)  # a plain tensor path works as before
    with pytest.raises(KeyError, match=r"'synthesis\.b8' is not tapped"):
        taps["synthesis.b8"]


def test_nested_selectors_and_the_root_path():
    model = Pair()
    inputs = torch.arange(3.0)
    with FeatureTaps(model, ["[0]", "[1][0]", "[-1][-2]"]) as taps:
        model(inputs)
    assert torch.equal(taps["[0]"], inputs + 1)
    assert torch.equal(taps["[1][0]"], inputs * 2) and torch.equal(taps["[-1][-2]"], inputs * 2)


def test_in_place_changes_are_detected_per_selector_path():
    class Block(nn.Module):
        def forward(self, x):
            return x * 2, x * 3

    model = nn.Sequential(Block())
    with FeatureTaps(model, ["0[0]", "0[1]"]) as taps:
        features, image = model[0](torch.ones(2))
        features.add_(1)  # a later operation changes element 0 in place
    assert torch.equal(taps["0[1]"], torch.full((2,), 3.0))
    with pytest.raises(ValueError, match=r"the output of model module '0\[0\]' was changed in place"):
        taps["0[0]"]


def test_a_tuple_output_without_a_selector_names_the_path_the_output_and_the_fix():
    generator = ToyGenerator(4)
    taps = FeatureTaps(generator, ["synthesis.b8"], role="student")
    with taps, pytest.raises(ValueError) as error:
        generator(torch.randn(2, 8))
    message = str(error.value)
    assert "\n" not in message
    assert message == (
        "student module 'synthesis.b8' (SynthesisBlock) returned a tuple of 2: Tensor [2, 4, 8, 8], "
        "Tensor [2, 3, 8, 8]; only a tensor can be tapped: tap 'synthesis.b8[0]' to take the first element "
        "(other tensors: 'synthesis.b8[1]')"
    )
    assert no_hooks(generator) and "synthesis.b8" not in taps.features
    # Nested and tensor-less outputs say what they hold, too.
    model = Pair()
    with FeatureTaps(model, [""]), pytest.raises(ValueError) as error:
        model(torch.ones(1))
    assert "returned a tuple of 2: Tensor [1], tuple of 2 (Tensor [1], None)" in str(error.value)
    assert "tap '[0]' to take the first element (other tensors: '[1][0]')" in str(error.value)
    lstm = nn.LSTM(2, 2)
    with FeatureTaps(lstm, [""]), pytest.raises(ValueError, match=r"returned a tuple of 2: Tensor \[1, 1, 2\]"):
        lstm(torch.randn(1, 1, 2))

    class Empty(nn.Module):
        def forward(self, x):
            return {"x": x}

    empty = Empty()
    with FeatureTaps(empty, [""]), pytest.raises(ValueError, match="returned a dict; only a tensor can be tapped, and"):
        empty(torch.ones(1))


@pytest.mark.parametrize(
    ("path", "message"),
    [
        (
            "synthesis.b8[0][1]",
            r"^student tap 'synthesis\.b8\[0\]\[1\]': module 'synthesis\.b8' \(SynthesisBlock\) returned a tuple of 2: "
            r"Tensor \[2, 4, 8, 8\], Tensor \[2, 3, 8, 8\]; 'synthesis\.b8\[0\]' is Tensor \[2, 4, 8, 8\], which is "
            r"not a tuple or list, so \[1\] cannot select from it; tap 'synthesis\.b8\[0\]' for the tensor itself$",
        ),
        (
            "mapping[0]",
            r"^student tap 'mapping\[0\]': module 'mapping' \(Linear\) returned Tensor \[2, 64\]; that is not a "
            r"tuple or list, so \[0\] cannot select from it; tap 'mapping' for the tensor itself$",
        ),
        (
            "synthesis.b8[2]",
            r"^student tap 'synthesis\.b8\[2\]': module 'synthesis\.b8' \(SynthesisBlock\) returned a tuple of 2: "
            r"Tensor \[2, 4, 8, 8\], Tensor \[2, 3, 8, 8\]; index 2 is out of range for 'synthesis\.b8', which "
            r"has 2 elements$",
        ),
        ("synthesis.b8[-3]", r"index -3 is out of range for 'synthesis\.b8', which has 2 elements$"),
    ],
)
def test_selectors_that_do_not_lead_to_a_tensor(path, message):
    generator = ToyGenerator(4)
    with FeatureTaps(generator, [path], role="student"), pytest.raises(ValueError, match=message):
        generator(torch.randn(2, 8))
    assert no_hooks(generator)


def test_selected_elements_that_are_not_tensors():
    model = Pair()
    with FeatureTaps(model, ["[1][1]"]), pytest.raises(ValueError) as error:
        model(torch.ones(1))
    assert str(error.value) == (
        "model tap '[1][1]': module '' (Pair) returned a tuple of 2: Tensor [1], tuple of 2 (Tensor [1], None); "
        "'[1][1]' is None, not a tensor, and only a tensor can be tapped"
    )
    with FeatureTaps(model, ["[1][1][0]"]), pytest.raises(ValueError, match=r"'\[1\]\[1\]' is None, which is not a"):
        model(torch.ones(1))


def test_a_selector_on_a_sequential_points_to_its_dotted_submodule():
    model = nn.Sequential(nn.Conv2d(1, 2, 1), nn.ReLU())
    with FeatureTaps(model, ["[1]"]), pytest.raises(ValueError, match=r"tap '' for the tensor itself, or '1' for its"):
        model(torch.ones(1, 1, 2, 2))
    container = nn.Sequential(nn.ModuleList([nn.Conv2d(1, 2, 1)]))
    with pytest.raises(ValueError, match=r"tap path '0\[0\]': module '0' \(ModuleList\) is never called.*'0\.0'"):
        FeatureTaps(container, ["0[0]"])


@pytest.mark.parametrize("path", ["synthesis.b8[x]", "synthesis.b8[0", "synthesis.b8]0[", "synthesis.b8[0].conv",
                                  "b8[]", "b8[ 0]", "b8[1.5]"])  # fmt: skip
def test_malformed_selectors_are_refused_at_construction(path):
    expected = rf"^student tap path {re.escape(repr(path))} is malformed: a tap path is a "
    expected += r"module path optionally ending in integer element selectors, e.g\. 'synthesis\.b64\[0\]'"
    with pytest.raises(ValueError, match=expected):
        FeatureTaps(ToyGenerator(4), [path], role="student")
    with pytest.raises(ValueError, match="is malformed"):
        declared_channels(ToyGenerator(4), path, role="student")


def test_split_tap_path():
    assert split_tap_path("synthesis.b64") == ("synthesis.b64", ())
    assert split_tap_path("synthesis.b64[0]") == ("synthesis.b64", (0,))
    assert split_tap_path("block[1][-2]") == ("block", (1, -2))
    assert split_tap_path("[0]") == ("", (0,))
    assert split_tap_path("") == ("", ())
    with pytest.raises(TypeError, match="tap path must be a str, got int 3"):
        split_tap_path(3)


def test_the_module_part_is_resolved_with_the_close_match_error():
    generator = ToyGenerator(4)
    with pytest.raises(ValueError, match=r"no module at path 'synthesis\.b9'; closest: 'synthesis\.b8'"):
        FeatureTaps(generator, ["synthesis.b9[0]"])
    with pytest.raises(ValueError, match=r"no module at path 'synthesis\.b9'; closest: 'synthesis\.b8'"):
        declared_channels(generator, "synthesis.b9[0]")
    # No layer declares one element's channels: None, so that an example forward measures them.
    assert declared_channels(generator, "synthesis.b8[0]") is None
    assert declared_channels(generator, "synthesis.b8.conv") == 4


def test_distiller_feature_and_adapted_terms_on_selector_paths():
    torch.manual_seed(0)
    teacher, student = ToyGenerator(16), ToyGenerator(4)
    noise = torch.randn(3, 8)
    terms = {
        "feature": {"pairs": {"synthesis.b8[1]": "synthesis.b8[1]", "synthesis.b16[-1]": "synthesis.b16[1]"}},
        "adapted": {"weight": 0.5, "pairs": {"synthesis.b16[0]": "synthesis.b16[0]"}},
    }
    with pytest.raises(ValueError, match=r"cannot tell how many channels student module 'synthesis\.b16\[0\]'.*"
                                         r"pass example_batch"):  # fmt: skip
        Distiller(teacher, student, task="generator", terms=terms)
    distiller = Distiller(teacher, student, task="generator", terms=terms, example_batch=(noise, None))
    adapter = distiller.terms["adapted"].adapters[0]
    assert (adapter.student_channels, adapter.teacher_channels) == (4, 16)

    result = distiller((noise, None))
    with torch.no_grad():
        teacher_maps = by_hand(teacher, noise)
    student_maps = by_hand(student, noise)
    expected_feature = feature_match_ref(student_maps["b8"][1], teacher_maps["b8"][1], kind="mse")
    expected_feature = expected_feature + feature_match_ref(student_maps["b16"][1], teacher_maps["b16"][1], kind="mse")
    torch.testing.assert_close(result["feature"], expected_feature)
    torch.testing.assert_close(result["adapted"], adapter(student_maps["b16"][0], teacher_maps["b16"][0]))
    assert result["adapted"] > 0 and result["feature"] > 0
    torch.testing.assert_close(result.total, result["feature"] + 0.5 * result["adapted"])

    # Gradients reach the student through the selected elements, and the adapter.
    result.total.backward()
    assert student.synthesis.b16.conv.weight.grad.abs().sum() > 0 and adapter.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())
    assert no_hooks(student) and no_hooks(teacher)

    # capture() keys the detached maps by the full selector paths.
    step = distiller.capture((noise, None))
    assert set(step.student_features) == {"synthesis.b8[1]", "synthesis.b16[-1]", "synthesis.b16[0]"}
    assert set(step.teacher_features) == {"synthesis.b8[1]", "synthesis.b16[1]", "synthesis.b16[0]"}
    torch.testing.assert_close(step.teacher_features["synthesis.b16[0]"], teacher_maps["b16"][0])


def test_distiller_reports_a_tuple_tap_without_selector():
    torch.manual_seed(0)
    terms = {"feature": {"pairs": {"synthesis.b8": "synthesis.b8[0]"}}}
    distiller = Distiller(ToyGenerator(4), ToyGenerator(4), task="generator", terms=terms)
    with pytest.raises(ValueError, match=r"^student module 'synthesis\.b8' \(SynthesisBlock\) returned a tuple of 2: .*"
                                         r"tap 'synthesis\.b8\[0\]' to take the first element"):  # fmt: skip
        distiller((torch.randn(2, 8), None))
    assert no_hooks(distiller.student) and no_hooks(distiller.teacher)
