"""attention_transfer: the Triton kernels against the reference and an independent float64 computation."""

import importlib
import re

import pytest
import torch
from compare import loss_and_grads, loss_scale, relative_error, require_cuda

from gankd.kernels import attention_transfer, attention_transfer_ref

attention_module = importlib.import_module("gankd.kernels.attention_transfer")

REDUCTIONS = ("mean", "sum", "none")
DTYPES = (torch.float32, torch.float16, torch.bfloat16)
GRAD_TOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}
LOSS_TOL = {torch.float32: 1e-5, torch.float16: 1e-5, torch.bfloat16: 1e-5}


@pytest.fixture
def small_blocks(monkeypatch):
    monkeypatch.setattr(attention_module, "BLOCK_C", 4)
    monkeypatch.setattr(attention_module, "BLOCK_P", 16)
    monkeypatch.setattr(attention_module, "TAIL_BLOCK", 16)


def oracle(student, teacher, *, p, reduction):
    """float64 attention-transfer loss written independently of the reference."""

    def attention(x):
        q = (x.double().abs() ** p).sum(1).flatten(1) / x.shape[1]
        return q / q.square().sum(1, keepdim=True).sqrt().clamp(min=1e-12)

    e = (attention(student) - attention(teacher)).square().reshape(student.shape[:1] + student.shape[2:])
    return e if reduction == "none" else (e.mean() if reduction == "mean" else e.sum())


def compare(student, teacher, record_error, label, dtype=torch.float32, **kwargs):
    inputs = dict(student=student.requires_grad_(True), teacher=teacher.requires_grad_(True))
    kernel = loss_and_grads(attention_transfer, inputs, impl="triton", **kwargs)
    reference = loss_and_grads(attention_transfer_ref, inputs, **kwargs)
    exact = loss_and_grads(oracle, {k: v.double().requires_grad_(True) for k, v in inputs.items()}, **kwargs)
    assert kernel[0].dtype == torch.float32 and kernel[0].shape == exact[0].shape
    checks = [("loss", LOSS_TOL[dtype], kernel[0], reference[0], exact[0])]
    checks += [(f"grad_{k}", GRAD_TOL[dtype], kernel[1][k], reference[1][k], exact[1][k]) for k in inputs]
    for name, tol, got, ref, truth in checks:
        if name != "loss":
            assert got.dtype == inputs[name[5:]].dtype and got.stride() == inputs[name[5:]].stride(), name
        record_error(f"attention_transfer {label} {name} vs reference", relative_error(got, ref))
        record_error(f"attention_transfer {label} {name} vs float64", relative_error(got, truth))
        assert relative_error(got, ref) <= tol, name
        assert relative_error(got, truth) <= tol, name


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("p", [2, 1, 1.5])
def test_matches_reference_and_float64(p, reduction, dtype, device, small_blocks, record_error):
    torch.manual_seed(0)
    # Different channel counts (5 and 11, both odd); 7 x 9 positions over 16-wide position blocks.
    student = torch.randn(2, 5, 7, 9, device=device).to(dtype)
    teacher = torch.randn(2, 11, 7, 9, device=device).to(dtype)
    # A mean's fp16 gradients here are around 1e-6, fp16 subnormals of 3 to 5 bits: scaled as in training.
    upstream = loss_scale(dtype, device) if reduction == "mean" else None
    compare(student, teacher, record_error, f"p={p} {str(dtype)[6:]}", dtype, p=p, reduction=reduction,
            upstream=upstream)  # fmt: skip


@pytest.mark.parametrize("layout", ["channels_last", "mixed", "3d"])
def test_layouts(layout, device, small_blocks, record_error):
    torch.manual_seed(1)
    if layout == "3d":
        student, teacher = torch.randn(3, 6, 50, device=device), torch.randn(3, 2, 50, device=device)
    else:
        student = torch.randn(2, 6, 5, 7, device=device).to(memory_format=torch.channels_last)
        teacher = torch.randn(2, 9, 5, 7, device=device)
        if layout == "channels_last":
            teacher = teacher.to(memory_format=torch.channels_last)
    for reduction in REDUCTIONS:
        compare(student, teacher, record_error, "layouts", p=2, reduction=reduction)


def test_teacher_without_grad_and_compile(device):
    torch.manual_seed(2)
    conv = torch.nn.Conv2d(3, 4, 3, padding=1).to(device)
    inputs, teacher = torch.randn(2, 3, 6, 6, device=device), torch.randn(2, 8, 6, 6, device=device)

    def forward(impl):
        return attention_transfer(conv(inputs), teacher, impl=impl) * 3.0

    results = []
    for fn, impl in ((torch.compile(forward, fullgraph=True, backend="aot_eager"), "triton"), (forward, "reference")):
        conv.zero_grad()
        loss = fn(impl)
        loss.backward()
        results.append((loss.detach(), conv.weight.grad.clone()))
    assert torch.allclose(results[0][0], results[1][0], rtol=1e-5)
    assert relative_error(results[0][1], results[1][1]) < 1e-5


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_teacher_gradient_alone(reduction, device, small_blocks, record_error):
    # Only the teacher wants a gradient: the gradient kernel's one side is the teacher's.
    torch.manual_seed(4)
    student, teacher = torch.randn(3, 4, 5, 6, device=device), torch.randn(3, 7, 5, 6, device=device)
    inputs = dict(student=student, teacher=teacher.requires_grad_(True))
    kernel = loss_and_grads(attention_transfer, inputs, impl="triton", reduction=reduction)
    reference = loss_and_grads(attention_transfer_ref, inputs, reduction=reduction)
    assert kernel[1]["student"] is None
    assert relative_error(kernel[0], reference[0]) < 1e-5
    assert relative_error(kernel[1]["teacher"], reference[1]["teacher"]) < 1e-5


@pytest.mark.parametrize("p", [2, 1.5])
def test_maps_under_the_normalize_eps(p, device, small_blocks, record_error):
    # A student of ~1e-7 has a map whose norm (~1e-13 for p = 2) is under eps = 1e-12: normalize divides by eps,
    # whose Jacobian is I / eps, not the projection used above it. Sample 1 is ordinary, for contrast.
    torch.manual_seed(5)
    student = torch.randn(2, 3, 5, 5, device=device)
    student[0] *= 1e-7 if p == 2 else 1e-9
    compare(student, torch.randn(2, 6, 5, 5, device=device), record_error, f"under eps p={p}", p=p, reduction="sum")


def test_map_norm_exactly_eps_takes_the_clamped_branch(device):
    # |q| = |(6e-13, 8e-13)| is fp32's 1e-12 exactly: torch's clamp_min passes no gradient at equality, so the
    # normalize's Jacobian is I / eps there, not the projection above it.
    student = torch.tensor([[[6e-13, 8e-13]]], device=device)
    if torch.linalg.vector_norm(student).item() != torch.tensor(1e-12).item():
        pytest.skip("this device's norm of (6e-13, 8e-13) is not fp32's 1e-12 exactly")
    inputs = dict(student=student.requires_grad_(True), teacher=torch.tensor([[[1.0, 3.0]]], device=device))
    kernel = loss_and_grads(attention_transfer, inputs, impl="triton", p=1, reduction="sum")
    reference = loss_and_grads(attention_transfer_ref, inputs, p=1, reduction="sum")
    assert relative_error(kernel[1]["student"], reference[1]["student"]) < 1e-5


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_nan_spreads_over_its_sample(reduction, device):
    # A NaN feature makes its sample's norm NaN, hence every position's loss and gradient of that sample (as in
    # the reference), and leaves the other sample finite.
    student, teacher = torch.randn(2, 3, 4, 4, device=device), torch.randn(2, 5, 4, 4, device=device)
    student[0, 1, 2, 3] = float("nan")
    inputs = dict(student=student.requires_grad_(True), teacher=teacher.requires_grad_(True))
    for function, options in ((attention_transfer, dict(impl="triton")), (attention_transfer_ref, {})):
        loss, grads = loss_and_grads(function, inputs, reduction=reduction, **options)
        if reduction == "none":
            assert loss[0].isnan().all() and loss[1].isfinite().all()
        else:
            assert loss.isnan()
        for grad in grads.values():
            assert grad[0].isnan().all() and grad[1].isfinite().all()


def test_per_position_loss_with_a_broadcast_upstream(device, small_blocks):
    # reduction="none" followed by .mean() hands the backward an expanded (stride 0) upstream gradient.
    torch.manual_seed(6)
    inputs = dict(student=torch.randn(2, 3, 6, 5, device=device).requires_grad_(True),
                  teacher=torch.randn(2, 5, 6, 5, device=device).requires_grad_(True))  # fmt: skip
    per_position = loss_and_grads(lambda **x: attention_transfer(**x, reduction="none", impl="triton").mean(),
                                  inputs, upstream=torch.tensor(3.0))  # fmt: skip
    mean = loss_and_grads(attention_transfer_ref, inputs, upstream=torch.tensor(3.0))
    assert relative_error(per_position[0], mean[0]) < 1e-5
    for name in inputs:
        assert relative_error(per_position[1][name], mean[1][name]) < 1e-5, name


def test_inference_teacher_without_gradient_is_not_copied(device, monkeypatch):
    # Only the maps that get gradients are saved for backward: a teacher made under inference mode needs no copy.
    saved = []
    real_saveable = attention_module.saveable
    monkeypatch.setattr(attention_module, "saveable", lambda *x: saved.append(x) or real_saveable(*x))
    with torch.inference_mode():
        teacher = torch.randn(2, 4, 3, 3, device=device)
    student = torch.randn(2, 3, 3, 3, device=device, requires_grad=True)
    attention_transfer(student, teacher, impl="triton").backward()
    assert len(saved) == 1 and saved[0][0].shape == (2, 3, 9) and saved[0][1] is None
    assert student.grad is not None and student.grad.abs().sum() > 0


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("impl", ["triton", "reference"])
def test_empty_batch(reduction, impl, device):
    # N = 0 raised in the reference's reshape (both paths take it for empty maps); a mean over nothing is 0.
    student = torch.randn(0, 5, 3, 4, device=device, requires_grad=True)
    loss = attention_transfer(student, torch.randn(0, 3, 3, 4, device=device), reduction=reduction, impl=impl)
    assert loss.shape == ((0, 3, 4) if reduction == "none" else ())
    assert reduction == "none" or loss.item() == 0
    loss.sum().backward()
    assert student.grad.shape == student.shape


def test_identical_attention_gives_zero(device):
    features = torch.randn(2, 4, 5, 5, device=device)
    # Scaling the features does not change the normalized map: loss 0 whatever the channel count.
    loss = attention_transfer(features, torch.cat([features, features], 1) * 3.0, impl="triton")
    assert loss.abs().item() < 1e-7


MAP = torch.randn(2, 3, 4, 4)
BAD_INPUTS = [
    (dict(teacher=torch.randn(3, 3, 4, 4)), ValueError, "same batch size and spatial sizes"),
    (dict(teacher=torch.randn(2, 3, 4, 5)), ValueError, "got (2, 3, 4, 4) and (2, 3, 4, 5)"),
    (dict(p=0), ValueError, "p must be > 0"),
    (dict(p=-1.0), ValueError, "p must be > 0"),
    (dict(p=float("nan")), ValueError, "p must be finite"),
    (dict(p="2"), TypeError, "p must be a real number"),
    (dict(student=MAP.long()), TypeError, "student must be float16"),
    (dict(reduction="batchmean"), ValueError, "reduction must be one of"),
    (dict(impl="fast"), ValueError, "impl must be one of"),
    (dict(teacher=MAP.to("meta")), ValueError, "same device"),
    (dict(student=torch.randn(2, 0, 4, 4)), ValueError, "student has no channels"),
    (dict(teacher=torch.randn(2, 0, 4, 4)), ValueError, "teacher has no channels"),
    # One position: every normalized map is 1, so the loss would be 0 whatever the features.
    (dict(student=torch.randn(2, 3, 1, 1), teacher=torch.randn(2, 5, 1, 1)), ValueError, "more than one spatial"),
    (dict(student=torch.randn(2, 3), teacher=torch.randn(2, 3)), ValueError, "tap layers before global pooling"),
]


@pytest.mark.parametrize("arguments, error, message", BAD_INPUTS)
@pytest.mark.parametrize("function", [attention_transfer, attention_transfer_ref])
def test_bad_input_is_named(function, arguments, error, message):
    call = dict(student=MAP, teacher=MAP.clone()) | arguments
    if function is attention_transfer_ref and "impl" in arguments:
        function = attention_transfer
    with pytest.raises(error, match=re.escape(message)):
        function(**call)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_large_feature_maps(dtype, device, record_error):
    require_cuda(device)
    torch.manual_seed(3)
    student = torch.randn(32, 256, 64, 64, device=device).to(dtype)
    teacher = torch.randn(32, 512, 64, 64, device=device).to(dtype).to(memory_format=torch.channels_last)
    # Its fp16 gradients are ~1e-10 before scaling: 2^16 leaves them fp16 subnormals, whose rounding differs
    # between any two implementations; a GradScaler grows its scale past 2^24 for such a loss.
    upstream = loss_scale(dtype, device) * (2.0**8 if dtype == torch.float16 else 1.0)
    compare(student, teacher, record_error, "large", dtype, p=2, reduction="mean", upstream=upstream)
