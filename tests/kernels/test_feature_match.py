"""feature_match: the Triton kernels against the reference and an independent float64 computation."""

import importlib

import pytest
import torch
from compare import loss_and_grads, loss_scale, relative_error, require_cuda

from gankd.kernels import feature_match, feature_match_ref
from gankd.kernels._features import dense_layout

feature_match_module = importlib.import_module("gankd.kernels.feature_match")

KINDS = ("mse", "l1", "smooth_l1", "cosine")
REDUCTIONS = ("mean", "sum", "none")
DTYPES = (torch.float32, torch.float16, torch.bfloat16)
GRAD_TOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}
LOSS_TOL = 1e-5


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks smaller than the test maps, so every loop runs several times and edges are masked."""
    monkeypatch.setattr(feature_match_module, "ELEMENTWISE_BLOCK", 64)
    monkeypatch.setattr(feature_match_module, "COSINE_BLOCK_C", 4)
    monkeypatch.setattr(feature_match_module, "COSINE_BLOCK_P", 16)


def oracle(student, teacher, *, kind, reduction):
    """float64 loss written independently of the reference."""
    s, t = student.double(), teacher.double()
    if kind == "cosine":
        eps = 1e-8
        dot = (s * t).sum(1)
        e = 1 - dot / (s.square().sum(1).sqrt().clamp(min=eps) * t.square().sum(1).sqrt().clamp(min=eps))
    else:
        d = s - t
        e = {"mse": d * d, "l1": d.abs(), "smooth_l1": torch.where(d.abs() < 1, 0.5 * d * d, d.abs() - 0.5)}[kind]
    return e if reduction == "none" else (e.mean() if reduction == "mean" else e.sum())


def compare(inputs, record_error, label, dtype=torch.float32, **kwargs):
    kernel = loss_and_grads(feature_match, inputs, impl="triton", **kwargs)
    reference = loss_and_grads(feature_match_ref, inputs, **kwargs)
    exact = loss_and_grads(oracle, {k: v.double().requires_grad_(v.requires_grad) for k, v in inputs.items()},
                           **kwargs)  # fmt: skip
    assert kernel[0].dtype == torch.float32 and kernel[0].shape == exact[0].shape
    for name, tol, got, ref, truth in [("loss", LOSS_TOL, kernel[0], reference[0], exact[0])] + [
        (f"grad_{key}", GRAD_TOL[dtype], kernel[1][key], reference[1][key], exact[1][key]) for key in inputs
    ]:
        if truth is None:
            assert got is None and ref is None, name
            continue
        if name != "loss":
            source = inputs[name[5:]]
            assert got.dtype == source.dtype, name
            if dense_layout(source):  # gradients come back in the input's own layout
                assert got.stride() == source.stride(), name
        record_error(f"feature_match {label} {name} vs reference", relative_error(got, ref))
        record_error(f"feature_match {label} {name} vs float64", relative_error(got, truth))
        assert relative_error(got, ref) <= tol, name
        assert relative_error(got, truth) <= tol, name
    return kernel


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("kind", KINDS)
def test_matches_reference_and_float64(kind, reduction, dtype, device, small_blocks, record_error):
    torch.manual_seed(0)
    # 5 channels (odd), 7 x 9 positions: blocks of 64 elements / 4 channels x 16 positions all run partly masked.
    student = torch.randn(2, 5, 7, 9, device=device).to(dtype)
    teacher = torch.randn(2, 5, 7, 9, device=device).to(dtype).requires_grad_(True)
    compare(dict(student=student.requires_grad_(True), teacher=teacher), record_error, f"{kind} {str(dtype)[6:]}",
            dtype, kind=kind,
            reduction=reduction)  # fmt: skip


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("layouts", ["channels_last", "mixed", "sliced", "2d", "3d", "5d_channels_last"])
def test_layouts(kind, layouts, device, small_blocks, record_error):
    torch.manual_seed(1)
    if layouts in ("channels_last", "mixed"):
        student = torch.randn(2, 6, 5, 7, device=device).to(memory_format=torch.channels_last)
        teacher = torch.randn(2, 6, 5, 7, device=device)
        if layouts == "channels_last":
            teacher = teacher.to(memory_format=torch.channels_last)
    elif layouts == "sliced":  # not dense: copied to contiguous first
        student = torch.randn(2, 12, 5, 7, device=device)[:, ::2]
        teacher = torch.randn(2, 6, 5, 7, device=device)
    elif layouts == "2d":
        student, teacher = torch.randn(9, 33, device=device), torch.randn(9, 33, device=device)
    elif layouts == "3d":
        student, teacher = torch.randn(3, 5, 40, device=device), torch.randn(3, 5, 40, device=device)
    else:
        student = torch.randn(2, 3, 4, 5, 6, device=device).to(memory_format=torch.channels_last_3d)
        teacher = torch.randn(2, 3, 4, 5, 6, device=device).to(memory_format=torch.channels_last_3d)
    for reduction in REDUCTIONS:
        inputs = dict(student=student.requires_grad_(True), teacher=teacher.requires_grad_(True))
        kernel = compare(inputs, record_error, "layouts",
                         kind=kind, reduction=reduction)  # fmt: skip
        if layouts == "channels_last" and reduction == "none" and kind != "cosine":
            assert kernel[0].is_contiguous(memory_format=torch.channels_last)


def test_gradients_only_where_asked(device):
    student = torch.randn(2, 3, 4, 4, device=device, requires_grad=True)
    teacher = torch.randn(2, 3, 4, 4, device=device)
    feature_match(student, teacher, impl="triton").backward()
    assert student.grad is not None and teacher.grad is None
    with torch.no_grad():
        value = feature_match(student, teacher, kind="cosine", impl="triton")
    assert value.grad_fn is None
    assert torch.allclose(value, feature_match_ref(student, teacher, kind="cosine"), rtol=1e-5)


def test_nan_propagates(device):
    student = torch.randn(2, 3, 4, 4, device=device)
    student[1, 2, 3, 0] = float("nan")
    for kind in KINDS:
        leaf = student.clone().requires_grad_(True)
        loss = feature_match(leaf, torch.randn_like(student), kind=kind, impl="triton")
        loss.backward()
        assert torch.isnan(loss), kind
        assert torch.isnan(leaf.grad).any(), kind


def test_cosine_of_a_zero_vector_is_finite(device):
    student = torch.randn(2, 4, 3, device=device)
    student[0, :, 1] = 0.0
    inputs = dict(student=student.requires_grad_(True), teacher=torch.randn(2, 4, 3, device=device))
    kernel = loss_and_grads(feature_match, inputs, kind="cosine", reduction="none", impl="triton")
    reference = loss_and_grads(feature_match_ref, inputs, kind="cosine", reduction="none")
    assert torch.allclose(kernel[0], reference[0]) and kernel[0][0, 1] == 1.0
    assert torch.all(torch.isfinite(kernel[1]["student"]))


@pytest.mark.parametrize("kind", ["mse", "cosine"])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_second_backward_raises_or_repeats(reduction, kind, device):
    student = torch.randn(2, 3, 4, 4, device=device, requires_grad=True)
    teacher = torch.randn(2, 3, 4, 4, device=device)
    loss = feature_match(student, teacher, kind=kind, reduction=reduction, impl="triton").sum()
    loss.backward(retain_graph=True)
    if reduction == "mean":  # gradient buffer written by the forward, consumed by the first backward
        with pytest.raises(
            RuntimeError, match=r"feature_match\(impl='triton'\) .* backpropagates once.*impl='reference'"
        ):
            loss.backward()
    else:  # the "none" backward recomputes from the saved inputs
        first = student.grad.clone()
        loss.backward()
        assert torch.allclose(student.grad, 2 * first)


@pytest.mark.parametrize("kind", ["mse", "cosine"])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_torch_compile_fullgraph(kind, reduction, device):
    torch.manual_seed(2)
    conv = torch.nn.Conv2d(3, 4, 3, padding=1).to(device)
    inputs, teacher = torch.randn(2, 3, 6, 6, device=device), torch.randn(2, 4, 6, 6, device=device)

    def forward(impl):
        return feature_match(conv(inputs), teacher, kind=kind, reduction=reduction, impl=impl).sum() * 0.5

    results = []
    for fn, impl in ((torch.compile(forward, fullgraph=True, backend="aot_eager"), "triton"), (forward, "reference")):
        conv.zero_grad()
        loss = fn(impl)
        loss.backward()
        results.append((loss.detach(), conv.weight.grad.clone()))
    assert torch.allclose(results[0][0], results[1][0], rtol=1e-5)
    assert relative_error(results[0][1], results[1][1]) < 1e-5


MAP = torch.randn(2, 3, 4, 4)
BAD_INPUTS = [
    (dict(teacher=torch.randn(2, 3, 4, 5)), ValueError, "same shape, got (2, 3, 4, 4) and (2, 3, 4, 5)"),
    (dict(student=torch.randn(8)), ValueError, "student must have shape [N, C, *spatial]"),
    (dict(student=MAP.long()), TypeError, "student must be float16"),
    (dict(teacher=MAP.int()), TypeError, "teacher must be float16"),
    (dict(teacher="features"), TypeError, "teacher must be a torch.Tensor"),
    (dict(kind="huber"), ValueError, "kind must be one of"),
    (dict(reduction="batchmean"), ValueError, "reduction must be one of"),
    (dict(impl="gpu"), ValueError, "impl must be one of"),
    (dict(teacher=MAP.to("meta")), ValueError, "same device"),
]


@pytest.mark.parametrize("arguments, error, message", BAD_INPUTS)
@pytest.mark.parametrize("function", [feature_match, feature_match_ref])
def test_bad_input_is_named(function, arguments, error, message):
    call = dict(student=MAP, teacher=MAP.clone()) | arguments
    if function is feature_match_ref and "impl" in arguments:
        function = feature_match
    with pytest.raises(error, match=__import__("re").escape(message)):
        function(**call)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("kind", KINDS)
def test_large_feature_maps(kind, dtype, device, record_error):
    require_cuda(device)
    torch.manual_seed(3)
    student = torch.randn(32, 512, 64, 64, device=device).to(dtype).to(memory_format=torch.channels_last)
    teacher = torch.randn(32, 512, 64, 64, device=device).to(dtype).to(memory_format=torch.channels_last)
    compare(dict(student=student.requires_grad_(True), teacher=teacher.requires_grad_(True)), record_error,
            f"large {kind}", dtype,
            kind=kind, reduction="mean", upstream=loss_scale(dtype, device))  # fmt: skip


@pytest.mark.gpu
def test_cosine_over_more_rows_than_a_grid_axis_holds(device):
    # [N, C] embeddings with N > 65535: one program per row must fit on grid axis 0.
    require_cuda(device)
    student = torch.randn(100_000, 64, device=device, requires_grad=True)
    teacher = torch.randn(100_000, 64, device=device)
    loss = feature_match(student, teacher, kind="cosine", impl="triton")
    assert torch.allclose(loss, feature_match_ref(student, teacher, kind="cosine"), rtol=1e-5)


def test_dense_layout_is_any_gapless_dim_order():
    from gankd.kernels._features import dense

    x = torch.randn(2, 3, 4, 5)
    for view in (x, x.permute(0, 2, 3, 1), x.permute(1, 0, 3, 2), x.to(memory_format=torch.channels_last), x[:1]):
        assert dense_layout(view) and dense(view) is view
    for gapped in (x[:, ::2], x[..., :4], x.expand(2, 2, 3, 4, 5)[0, :, :1]):
        assert not dense_layout(gapped) and dense(gapped).is_contiguous()
