"""fp16 gradients of mean-reduced losses keep their value under a GradScaler-sized upstream gradient.

The fused ops write the gradient for an upstream gradient of 1 in the forward and scale it in the backward.
For a mean over M elements that gradient is slope / M: with slope ~ 1e-3 (a student near its teacher) and
M = 262,144 it is ~4e-9, under fp16's smallest subnormal. Written as such it would be 0, and the upstream
2^16 of a GradScaler could not bring it back (on an H100 the kernels returned 0 where torch gave 1e-3).
The feature ops therefore compute fp16 means' gradients in the backward, from the upstream gradient; a
power-of-two headroom saved with them instead let large slopes overflow (the last tests).

softmax_kl's batchmean gradients are likewise (softmax difference) / rows: 512 rows of 512 classes near
their teacher's give ~1e-8 per element. A power-of-two headroom (the rows counted) covered the 1 / rows, but
not small softmax differences themselves (a confident student agreeing with its teacher: 1e-3 to 1e-9), so
softmax_kl too computes fp16 gradients in the backward now.
"""

import importlib

import pytest
import torch
from compare import FP16_LOSS_SCALE, relative_error

from gankd.kernels import (
    adapted_feature_match,
    adapted_feature_match_ref,
    feature_match,
    feature_match_ref,
    softmax_kl,
    softmax_kl_ref,
)

GRAD_TOL = 2e-3  # fp16's: the gradient is rounded once more than torch's, when the upstream scales it


def grads(fn, inputs: dict, upstream: float, **kwargs):
    leaves = {name: value.detach().clone().requires_grad_(True) for name, value in inputs.items()}
    (fn(**leaves, **kwargs) * upstream).backward()
    return {name: leaf.grad for name, leaf in leaves.items()}


def near_pair(device, shape=(1, 64, 64, 64)):
    """An fp16 student and a teacher 1e-3 away: gradients of the mean near 1e-3 / 262144 (l1: 1 / 262144)."""
    torch.manual_seed(21)
    student = torch.randn(shape, device=device)
    return student.half(), (student + 1e-3 * torch.randn_like(student)).half()


@pytest.mark.parametrize("kind", ["mse", "l1", "smooth_l1", "cosine"])
def test_feature_match_fp16_mean_gradients_survive_loss_scaling(kind, device):
    student, teacher = near_pair(device)
    inputs = dict(student=student, teacher=teacher)
    got = grads(feature_match, inputs, FP16_LOSS_SCALE, kind=kind, impl="triton")
    want = grads(feature_match_ref, inputs, FP16_LOSS_SCALE, kind=kind)
    for name in inputs:
        assert want[name].abs().max() > 0, name  # the case is meaningful: torch's gradient is not 0
        assert relative_error(got[name], want[name]) <= GRAD_TOL, name


@pytest.mark.parametrize("kind", ["mse", "l1"])
def test_adapted_feature_match_fp16_mean_gradients_survive_loss_scaling(kind, device):
    torch.manual_seed(22)
    student = torch.randn(1, 32, 64, 64, device=device).half()
    weight = (torch.randn(64, 32, 1, 1, device=device) / 6).half()
    adapted = torch.nn.functional.conv2d(student.float(), weight.float())
    teacher = (adapted + 1e-3 * torch.randn_like(adapted)).half()
    inputs = dict(student=student, teacher=teacher, weight=weight)
    got = grads(adapted_feature_match, inputs, FP16_LOSS_SCALE, kind=kind, impl="triton")
    want = grads(adapted_feature_match_ref, inputs, FP16_LOSS_SCALE, kind=kind)
    for name in ("student", "teacher"):  # the weight's gradient sums 4096 positions in fp32 either way
        assert want[name].abs().max() > 0, name
        assert relative_error(got[name], want[name]) <= GRAD_TOL, name
    assert relative_error(got["weight"], want["weight"]) <= GRAD_TOL


@pytest.mark.parametrize("with_labels", [False, True], ids=["kd", "kd+ce"])
def test_softmax_kl_fp16_batchmean_gradients_survive_loss_scaling(with_labels, device):
    torch.manual_seed(23)
    student = torch.randn(512, 512, device=device) * 2
    teacher = (student + 0.05 * torch.randn_like(student)).half()
    inputs = dict(student_logits=student.half(), teacher_logits=teacher)
    options = dict(temperature=4.0)
    if with_labels:  # batchmean over the 384 counted rows
        labels = torch.randint(0, 512, (512,), device=device)
        labels[::4] = -100
        options |= dict(labels=labels, ce_weight=0.5)
    got = grads(softmax_kl, inputs, FP16_LOSS_SCALE, impl="triton", **options)
    want = grads(softmax_kl_ref, inputs, FP16_LOSS_SCALE, **options)
    for name in inputs:
        assert want[name].abs().max() > 0, name
        assert relative_error(got[name], want[name]) <= GRAD_TOL, name


@pytest.mark.parametrize(
    "case",
    [
        dict(student=[[14.0, 0.0, 1.0, -1.0]], teacher=[[14.0, 0.5, 0.5, -1.0]], options={}),
        dict(
            student=[[9.0, 0.0, 1.0, -1.0, 2.0, 0.5]],
            teacher=[[9.0, 0.3, 0.7, -1.2, 2.1, 0.4]],
            options=dict(direction="jsd", temperature=0.3, reduction="none"),
        ),
        dict(
            student=[[9.0, 0.0, 1.0, -1.0, 2.0, 0.5]],
            teacher=[[9.0, 0.3, 0.7, -1.2, 2.1, 0.4]],
            options=dict(direction="reverse", temperature=0.5, reduction="sum"),
        ),
    ],
    ids=["forward batchmean", "jsd none T=0.3", "reverse sum T=0.5"],
)
def test_small_softmax_differences_keep_their_fp16_gradients(case, device):
    # A confident student that agrees with its teacher: softmax differences of 1e-3 to 1e-9, under fp16's normal
    # range before the upstream 2^16 could lift them. Written in the forward they were subnormals or 0 (the
    # forward case's small classes off by 5e-3 of the largest, the jsd teacher gradient all 0); torch multiplies
    # by the upstream before its one rounding, and so does the backward now.
    student = torch.tensor(case["student"], device=device).half()
    teacher = torch.tensor(case["teacher"], device=device).half()
    inputs = dict(student_logits=student, teacher_logits=teacher)
    got = grads(lambda **x: softmax_kl(**x, impl="triton", **case["options"]).sum(), inputs, FP16_LOSS_SCALE)
    want = grads(lambda **x: softmax_kl_ref(**x, **case["options"]).sum(), inputs, FP16_LOSS_SCALE)
    exact = grads(lambda **x: softmax_kl_ref(**{k: v.double() for k, v in x.items()}, **case["options"]).sum(),
                  inputs, FP16_LOSS_SCALE)  # fmt: skip
    for name in inputs:
        assert want[name].abs().max() > 0, name
        # The top class's gradient cancels in fp32 on both paths (1 - p of p near 1); the others are compared.
        small = slice(1, None)
        assert relative_error(got[name][:, small], exact[name][:, small]) <= GRAD_TOL, name
        assert relative_error(got[name][:, small], want[name][:, small]) <= GRAD_TOL, name


def test_fp16_softmax_kl_takes_teacher_logits_made_under_inference_mode(device):
    # fp16 gradients are computed in the backward, which reads the logits again: an inference-mode teacher
    # is copied to be saved.
    torch.manual_seed(27)
    student = torch.randn(8, 33, device=device).half()
    with torch.inference_mode():
        teacher = torch.randn(8, 33, device=device).half()
    leaf = student.clone().requires_grad_(True)
    (softmax_kl(leaf, teacher, 2.0, impl="triton") * FP16_LOSS_SCALE).backward()
    want = grads(softmax_kl_ref, dict(student_logits=student), FP16_LOSS_SCALE, teacher_logits=teacher.clone(),
                 temperature=2.0)["student_logits"]  # fmt: skip
    assert relative_error(leaf.grad, want) <= GRAD_TOL


def test_large_fp16_slopes_do_not_overflow(device):
    # mse's slope 2 (s - t) = 80000 is over fp16's 65504, its gradient 80000 / 2^18 * 2^16 = 20000 is not.
    student = torch.zeros(1, 4, 256, 256, dtype=torch.float16, device=device)
    teacher = torch.zeros_like(student)
    student[0, 0, 0, 0], teacher[0, 0, 0, 0] = 30000.0, -10000.0
    inputs = dict(student=student, teacher=teacher)
    got = grads(feature_match, inputs, FP16_LOSS_SCALE, impl="triton")
    want = grads(feature_match_ref, inputs, FP16_LOSS_SCALE)
    assert want["student"][0, 0, 0, 0] == 20000.0
    for name in inputs:
        assert torch.equal(got[name], want[name]), name


def test_small_fp16_cosine_norms_do_not_overflow(device):
    # cosine's slope grows as 1 / |s|: ~3e4 for students of norm 3e-5, gradients of the mean ~35 (upstream 1).
    torch.manual_seed(24)
    student, teacher = torch.randn(2, 1, 8, 64, 64, device=device).half()
    inputs = dict(student=(student * 1e-5).half(), teacher=teacher)
    got = grads(feature_match, inputs, 1.0, kind="cosine", impl="triton")
    want = grads(feature_match_ref, inputs, 1.0, kind="cosine")
    for name in inputs:
        assert want[name].isfinite().all(), name
        assert relative_error(got[name], want[name]) <= GRAD_TOL, name


def test_large_fp16_adapter_slopes_do_not_overflow(device):
    # Adapted values ~1e4 away from the teacher: the weight's slope reaches ~1e6, its gradient of the mean ~3e4.
    torch.manual_seed(25)
    student = (torch.randn(1, 64, 32, 32, device=device) * 500).half()
    weight = torch.randn(64, 64, 1, 1, device=device).half()
    inputs = dict(student=student, teacher=torch.zeros_like(student), weight=weight)
    got = grads(adapted_feature_match, inputs, 1.0, impl="triton")
    want = grads(adapted_feature_match_ref, inputs, 1.0)
    for name in inputs:
        assert want[name].isfinite().all(), name
        assert relative_error(got[name], want[name]) <= GRAD_TOL, name


@pytest.mark.parametrize("op", ["mse", "cosine", "adapted"])
def test_fp16_means_take_a_teacher_made_under_inference_mode(op, device):
    # The backward of an fp16 mean reads the maps again, so it saves them; an inference tensor (a frozen
    # teacher run under torch.inference_mode) cannot be saved as it is.
    torch.manual_seed(26)
    student = torch.randn(2, 8, 16, 16, device=device).half()
    with torch.inference_mode():
        teacher = torch.randn(2, 8, 16, 16, device=device).half()
    inputs = dict(student=student, teacher=teacher)
    if op == "adapted":
        inputs["weight"] = (torch.randn(8, 8, 1, 1, device=device) / 3).half()
        fused, reference, options = adapted_feature_match, adapted_feature_match_ref, {}
    else:
        fused, reference, options = feature_match, feature_match_ref, dict(kind=op)
    leaves = {name: value.clone().requires_grad_(name != "teacher") for name, value in inputs.items()}
    leaves["teacher"] = teacher
    (fused(**leaves, impl="triton", **options) * FP16_LOSS_SCALE).backward()
    want = grads(reference, {name: value.clone() for name, value in inputs.items()}, FP16_LOSS_SCALE, **options)
    assert relative_error(leaves["student"].grad, want["student"]) <= GRAD_TOL


def test_gradients_beside_an_fp16_input_keep_the_fused_path(monkeypatch, device):
    # Only the gradients written decide: an fp32 student's gradient next to an fp16 teacher is fused as before.
    feature_match_module = importlib.import_module("gankd.kernels.feature_match")

    def unexpected(*args):
        raise AssertionError("the backward recomputed a gradient the forward should have written")

    monkeypatch.setattr(feature_match_module, "_elementwise_grad_op", unexpected)
    torch.manual_seed(27)
    student = torch.randn(2, 8, 16, 16, device=device, requires_grad=True)
    teacher = torch.randn(2, 8, 16, 16, device=device).half()
    feature_match(student, teacher, impl="triton").backward()
    want = grads(feature_match_ref, dict(student=student, teacher=teacher), 1.0)
    assert relative_error(student.grad, want["student"]) <= 1e-5


def test_an_fp16_adapter_weight_gradient_alone_takes_the_backward_path(monkeypatch, device):
    # With fp16 products the weight kernel rounds dy to fp16 before dW's product, as a half-precision conv
    # backward does; dy = slope / M without the upstream gradient would be the value that underflows.
    adapted_module = importlib.import_module("gankd.kernels.adapted_feature_match")
    calls = []
    grad_op = adapted_module._adapted_grad_op
    monkeypatch.setattr(adapted_module, "_adapted_grad_op", lambda *args: calls.append(1) or grad_op(*args))
    torch.manual_seed(28)
    student = torch.randn(1, 16, 64, 64, device=device).half()  # frozen: only the adapter learns
    weight = (torch.randn(32, 16, 1, 1, device=device) / 4).half()
    adapted = torch.nn.functional.conv2d(student.float(), weight.float())
    inputs = dict(student=student, teacher=(adapted + 1e-3 * torch.randn_like(adapted)).half(), weight=weight)
    leaf = weight.clone().requires_grad_()
    (adapted_feature_match(student, inputs["teacher"], leaf, impl="triton") * FP16_LOSS_SCALE).backward()
    assert calls  # the weight gradient came from the backward, with the upstream gradient
    want = grads(adapted_feature_match_ref, inputs, FP16_LOSS_SCALE)
    assert relative_error(leaf.grad, want["weight"]) <= GRAD_TOL


@pytest.mark.parametrize("kind", ["mse", "cosine"])
def test_fp16_sums_do_not_overflow_under_a_small_upstream_gradient(kind, device):
    # A sum's slope itself can pass 65504 (mse: 2 x 40000; cosine: 1 / eps at a student position of zeros)
    # where upstream x slope does not: written for an upstream gradient of 1 it was inf.
    torch.manual_seed(29)
    if kind == "mse":
        student = torch.full((1, 4, 8, 8), 20000.0, device=device).half()
        teacher, upstream = torch.full_like(student, -20000.0), 0.25
    else:
        student = torch.zeros(1, 4, 8, 8, device=device).half()
        teacher, upstream = torch.randn(1, 4, 8, 8, device=device).half(), 1e-5
    inputs = dict(student=student, teacher=teacher)
    got = grads(feature_match, inputs, upstream, kind=kind, reduction="sum", impl="triton")
    want = grads(feature_match_ref, inputs, upstream, kind=kind, reduction="sum")
    for name in inputs:
        assert want[name].isfinite().all(), name
        assert relative_error(got[name], want[name]) <= GRAD_TOL, name


@pytest.mark.parametrize("dtypes", [(torch.float32, torch.float16), (torch.bfloat16, torch.bfloat16)],
                         ids=["fp32 maps, fp16 weight", "bf16"])  # fmt: skip
def test_adapter_gradients_without_fp16_rounding_keep_the_fused_path(dtypes, monkeypatch, device):
    adapted_module = importlib.import_module("gankd.kernels.adapted_feature_match")

    def unexpected(*args):
        raise AssertionError("the backward recomputed gradients the forward should have written")

    monkeypatch.setattr(adapted_module, "_adapted_grad_op", unexpected)
    maps_dtype, weight_dtype = dtypes
    torch.manual_seed(30)
    student = torch.randn(2, 8, 16, 16, device=device).to(maps_dtype).requires_grad_()
    weight = torch.randn(12, 8, 1, 1, device=device).to(weight_dtype).requires_grad_()
    teacher = torch.randn(2, 12, 16, 16, device=device).to(maps_dtype)
    adapted_feature_match(student, teacher, weight, impl="triton").backward()
    want = grads(adapted_feature_match_ref, dict(student=student, teacher=teacher, weight=weight), 1.0)
    tolerance = 1.6e-2 if maps_dtype == torch.bfloat16 else GRAD_TOL
    assert relative_error(student.grad, want["student"]) <= tolerance
    assert relative_error(weight.grad, want["weight"]) <= tolerance
