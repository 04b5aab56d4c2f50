"""adapted_feature_match: the Triton kernels against the reference and an independent float64 computation.

On a machine without a GPU the kernels run under the Triton interpreter (see tests/conftest.py).
"""

import importlib
import math

import pytest
import torch
import torch.nn.functional as F
from compare import TF32_TOL, loss_scale, relative_error, require_cuda

from gankd.kernels import adapted_feature_match, adapted_feature_match_ref

adapter_kernels = importlib.import_module("gankd.kernels._adapter_kernels")
adapter_module = importlib.import_module("gankd.kernels.adapted_feature_match")

KINDS = ("mse", "l1")
REDUCTIONS = ("mean", "sum", "none")
DTYPES = (torch.float32, torch.float16, torch.bfloat16)
# Relative tolerance (to the largest magnitude) per dtype: both paths compute in fp32 from the same stored
# inputs and round each gradient once to its input's dtype (one ulp apart at most).
GRAD_TOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}
LOSS_TOL = 1e-5
GRAD_NAMES = ("loss", "grad_student", "grad_teacher", "grad_weight", "grad_bias")


@pytest.fixture(autouse=True)
def ieee_float32(monkeypatch):
    """Exact fp32 products on a GPU too (the kernels follow torch.backends.cudnn.allow_tf32, on by default)."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)


@pytest.fixture
def small_blocks(monkeypatch):
    """16-wide position and teacher-channel blocks and several weight-kernel chunks, so small maps span many."""
    monkeypatch.setattr(adapter_kernels, "MAX_BLOCK_P", 16)
    monkeypatch.setattr(adapter_kernels, "MAX_BLOCK_CT", 16)
    monkeypatch.setattr(adapter_kernels, "CPU_WEIGHT_PROGRAMS", 8)


def oracle(student, teacher, weight, bias=None, *, kind="mse", reduction="mean"):
    """Independent float64 loss: the adapter as torch's 1x1 conv2d (4-D maps) or an einsum over channels."""
    student, teacher = student.double(), teacher.double()
    matrix = weight.double().reshape(weight.shape[0], weight.shape[1])
    bias = None if bias is None else bias.double()
    if student.dim() == 4:
        adapted = F.conv2d(student, matrix[:, :, None, None], bias)
    else:
        adapted = torch.einsum("oc,nc...->no...", matrix, student)
        if bias is not None:
            adapted = adapted + bias.reshape(-1, *[1] * (student.dim() - 2))
    per_element = (adapted - teacher).square() if kind == "mse" else (adapted - teacher).abs()
    if reduction == "none":
        return per_element
    return per_element.mean() if reduction == "mean" else per_element.sum()


def make_inputs(student_shape, n_teacher, device, dtype=torch.float32, *, bias=True, teacher_grad=True):
    """Student [N, Cs, *spatial], teacher [N, Ct, *spatial], weight [Ct, Cs, 1, 1] ~ conv init scale, bias [Ct]."""
    n_student = student_shape[1]
    student = torch.randn(student_shape, device=device).to(dtype)
    teacher = torch.randn(student_shape[0], n_teacher, *student_shape[2:], device=device).to(dtype)
    weight = (torch.randn(n_teacher, n_student, 1, 1, device=device) / math.sqrt(n_student)).to(dtype)
    bias = (torch.randn(n_teacher, device=device) * 0.5).to(dtype) if bias else None
    return student, teacher.requires_grad_(teacher_grad), weight.requires_grad_(True), bias


def upstream_for(reduction, teacher):
    if reduction == "none":
        return torch.rand(teacher.shape, device=teacher.device) + 0.5
    return torch.tensor(0.37, device=teacher.device)


def run_with_grads(fn, student, teacher, weight, bias, upstream, *, as_float64=False, student_view=None, **kwargs):
    """Loss value and gradients of (loss * upstream).sum() w.r.t. fresh leaf copies of the inputs; the student
    leaf goes through student_view (e.g. a slice) first when given."""

    def leaf(x, requires_grad):
        if x is None:
            return None
        x = x.detach().clone()
        return (x.double() if as_float64 else x).requires_grad_(requires_grad)

    leaves = [leaf(student, True), leaf(teacher, teacher.requires_grad), leaf(weight, weight.requires_grad),
              leaf(bias, bias is not None)]  # fmt: skip
    loss = fn((student_view or (lambda x: x))(leaves[0]), *leaves[1:], **kwargs)
    if upstream is None:  # loss.sum(): the upstream gradient of e arrives expanded (stride 0)
        loss.sum().backward()
    else:
        (loss * (upstream.double() if as_float64 else upstream)).sum().backward()
    return [loss.detach()] + [None if x is None else x.grad for x in leaves]


def triton_path(*args, **kwargs):
    return adapted_feature_match(*args, impl="triton", **kwargs)


def compare_all(student, teacher, weight, bias, record_error, label, *, upstream, tolerance=None, **kwargs):
    """Kernel vs reference vs float64 oracle: the loss and every gradient, each in its input's dtype, within
    `tolerance` if given (TF32 products), else LOSS_TOL and GRAD_TOL."""
    kernel = run_with_grads(triton_path, student, teacher, weight, bias, upstream, **kwargs)
    reference = run_with_grads(adapted_feature_match_ref, student, teacher, weight, bias, upstream, **kwargs)
    expected = run_with_grads(oracle, student, teacher, weight, bias, upstream, as_float64=True, **kwargs)
    assert kernel[0].dtype == torch.float32 and kernel[0].shape == expected[0].shape
    inputs = (None, student, teacher, weight, bias)
    for name, got, ref, exact, source in zip(GRAD_NAMES, kernel, reference, expected, inputs, strict=True):
        if exact is None:
            assert got is None and ref is None, name
            continue
        if source is not None:
            assert got.dtype == source.dtype and got.shape == source.shape, name
        tol = tolerance or (LOSS_TOL if name == "loss" else GRAD_TOL[source.dtype])
        error_vs_ref, error_vs_exact = relative_error(got, ref), relative_error(got, exact)
        record_error(f"adapted {label} {name} vs reference", error_vs_ref)
        record_error(f"adapted {label} {name} vs float64", error_vs_exact)
        assert error_vs_ref <= tol, f"{name}: {error_vs_ref:.2e} from the reference"
        assert error_vs_exact <= tol, f"{name}: {error_vs_exact:.2e} from float64"
    return kernel


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("kind", KINDS)
def test_matches_reference_and_float64(kind, reduction, dtype, device, small_blocks, record_error):
    # Cs = 5 -> Ct = 20 (two 16-wide channel blocks), 5x7 = 35 positions (three 16-wide tiles per sample),
    # three weight-kernel chunks; every input gets a gradient, the upstream gradient is not 1.
    torch.manual_seed(0)
    student, teacher, weight, bias = make_inputs((2, 5, 5, 7), 20, device, dtype)
    compare_all(student, teacher, weight, bias, record_error, f"{kind} {str(dtype)[6:]}",
                upstream=upstream_for(reduction, teacher), kind=kind, reduction=reduction)  # fmt: skip


@pytest.mark.parametrize(
    "layout",
    ["channels_last", "channels_last_student_only", "sliced", "vectors", "sequence", "volume", "weight_2d_transposed",
     "expanded_upstream"],
)  # fmt: skip
def test_layouts_and_shapes(layout, device, small_blocks, record_error):
    torch.manual_seed(1)
    shape = {"vectors": (37, 6), "sequence": (3, 6, 19), "volume": (2, 6, 3, 2, 4)}.get(layout, (2, 6, 5, 4))
    student, teacher, weight, bias = make_inputs(shape, 18, device)
    upstream, student_view = upstream_for("none", teacher), None
    if layout.startswith("channels_last"):
        student = student.to(memory_format=torch.channels_last)
        if layout == "channels_last":
            teacher = teacher.detach().to(memory_format=torch.channels_last).requires_grad_(True)
    elif layout == "sliced":  # every other column of a wider map: neither contiguous nor channels_last
        student = torch.randn(2, 6, 5, 8, device=device)

        def student_view(x):
            return x[..., ::2]

    elif layout == "weight_2d_transposed":  # a [Ct, Cs] weight that is the transpose of a [Cs, Ct] buffer
        weight = weight.detach().reshape(18, 6).t().contiguous().t().requires_grad_(True)
        assert not weight.is_contiguous()
    elif layout == "expanded_upstream":  # loss.sum() backward: an expanded (stride 0) upstream map
        upstream = None
    kernel = compare_all(student, teacher, weight, bias, record_error, f"layout {layout}", upstream=upstream,
                         student_view=student_view, reduction="none")  # fmt: skip
    if layout == "channels_last":
        # Read in place and answered in the same layout: e and every map gradient come back channels_last.
        for tensor in (kernel[0], kernel[1], kernel[2]):
            assert tensor.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_strided_bias(reduction, device, small_blocks):
    # A bias that is every other element of a longer vector was read as if packed: a silently wrong loss.
    torch.manual_seed(2)
    student, teacher, weight, _ = make_inputs((2, 6, 5, 4), 18, device)
    results = []
    for fn in (triton_path, adapted_feature_match_ref):
        every_other = torch.randn(36, device=device, generator=torch.Generator(device).manual_seed(3))
        every_other.requires_grad_(True)
        loss = fn(student, teacher, weight, every_other[::2], reduction=reduction)
        results.append((loss, torch.autograd.grad(loss.sum(), every_other)[0]))
    (got, grad_got), (expected, grad_expected) = results
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(grad_got, grad_expected)
    assert grad_got[1::2].abs().max() == 0


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "student_shape, n_teacher",
    [((2, 3, 3, 3), 5), ((1, 33, 10, 13), 70), ((3, 17, 1, 1), 9)],
    ids=["Cs3_Ct5", "Cs33_Ct70_P130", "spatial_1x1"],
)
def test_channel_counts_with_default_blocks(student_shape, n_teacher, kind, device, record_error):
    # Odd channel counts padded to the 16-wide minimum of tl.dot; 70 teacher channels and 130 positions
    # exceed the default 32-channel and 64-position blocks.
    torch.manual_seed(2)
    student, teacher, weight, bias = make_inputs(student_shape, n_teacher, device)
    compare_all(student, teacher, weight, bias, record_error, "channel counts", kind=kind,
                upstream=torch.tensor(1.5, device=device))  # fmt: skip


@pytest.mark.parametrize("kind", KINDS)
def test_hopper_tiles(kind, device, monkeypatch, record_error):
    # On sm_90 tensor-core products take 64 teacher channels per block (wgmma's fewest rows) up to 128 student
    # channels; wider students keep the smaller blocks. Here 70 teacher channels: one full block, one of 6.
    if device.type != "cpu":
        pytest.skip("on a GPU, test_tf32_products_for_float32 runs these tiles")
    monkeypatch.setattr(adapter_kernels, "_min_tensor_core_rows", lambda device: adapter_kernels.WGMMA_ROWS)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)  # the interpreter's products stay exact
    torch.manual_seed(5)
    student, teacher, weight, bias = make_inputs((2, 33, 6, 7), 70, device)
    config = adapter_kernels.launch_config(student, weight, bias, None, kind)
    assert (config["BLOCK_CS"], config["BLOCK_CT"]) == (64, adapter_kernels.WGMMA_ROWS)
    wide = torch.empty(1, 512, 4, device=device)
    assert adapter_kernels.launch_config(wide, wide.new_empty(8, 512), None, None, kind)["BLOCK_CT"] == 16
    compare_all(student, teacher, weight, bias, record_error, "hopper tiles", kind=kind,
                upstream=upstream_for("none", teacher), reduction="none")  # fmt: skip


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("kind", KINDS)
def test_without_bias(kind, reduction, device, small_blocks, record_error):
    torch.manual_seed(3)
    student, teacher, weight, _ = make_inputs((2, 7, 3, 6), 17, device, bias=False)
    compare_all(student, teacher, weight, None, record_error, "no bias", kind=kind, reduction=reduction,
                upstream=upstream_for(reduction, teacher))  # fmt: skip


def test_weight_chunks_that_do_not_divide_the_tiles(device, monkeypatch, small_blocks, record_error):
    # 7 samples x one 16-wide tile = 7 tiles, 2 channel blocks, 8 programs: 4 chunks of 2 tiles, the last
    # chunk half past the end; every partial sum must still land in dW and db exactly once.
    torch.manual_seed(4)
    student, teacher, weight, bias = make_inputs((7, 4, 3, 3), 20, device)
    compare_all(student, teacher, weight, bias, record_error, "uneven chunks", reduction="sum",
                upstream=torch.tensor(1.0, device=device))  # fmt: skip


@pytest.mark.parametrize(
    "student_dtype, teacher_dtype, weight_dtype",
    [(torch.bfloat16, torch.float16, torch.float32), (torch.float16, torch.float32, torch.bfloat16)],
    ids=["bf16_fp16_fp32", "fp16_fp32_bf16"],
)
def test_mixed_dtypes(student_dtype, teacher_dtype, weight_dtype, device, small_blocks, record_error):
    # Each input is loaded in its own dtype (an fp32 adapter on bf16 features is the usual mixed case) and
    # each gradient comes back in its input's dtype.
    torch.manual_seed(5)
    student, teacher, weight, bias = make_inputs((2, 5, 4, 5), 20, device)
    student = student.to(student_dtype)
    teacher = teacher.detach().to(teacher_dtype).requires_grad_(True)
    weight = weight.detach().to(weight_dtype).requires_grad_(True)
    compare_all(student, teacher, weight, bias.to(weight_dtype), record_error, "mixed dtypes",
                upstream=torch.tensor(0.8, device=device))  # fmt: skip


def test_gradients_only_where_asked(device, record_error):
    torch.manual_seed(6)
    student, teacher, weight, bias = make_inputs((2, 4, 3, 3), 6, device, teacher_grad=False)
    student.requires_grad_(True)
    bias.requires_grad_(True)
    with torch.no_grad():
        value = adapted_feature_match(student, teacher, weight, bias, impl="triton")
    assert value.grad_fn is None
    expected = adapted_feature_match_ref(student, teacher, weight, bias)
    assert math.isclose(value.item(), expected.item(), rel_tol=1e-5)
    # A frozen adapter: gradients reach the student and the bias only.
    frozen = weight.detach()
    adapted_feature_match(student, teacher, frozen, bias, kind="l1", impl="triton").backward()
    assert student.grad is not None and bias.grad is not None and teacher.grad is None and frozen.grad is None
    # Only the adapter learns (fixed student features): its gradients match the reference.
    loss = adapted_feature_match(student.detach(), teacher, weight, None, reduction="sum", impl="triton")
    loss.backward()
    expected_weight = weight.detach().clone().requires_grad_(True)
    adapted_feature_match_ref(student.detach(), teacher, expected_weight, None, reduction="sum").backward()
    assert relative_error(weight.grad, expected_weight.grad) <= GRAD_TOL[torch.float32]


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_nan_stays_at_its_position(reduction, device):
    # A NaN student element poisons y at its position, in every teacher channel, and nowhere else.
    student, teacher, weight, bias = make_inputs((2, 3, 4, 4), 5, device, teacher_grad=False)
    student[1, 2, 3, 0] = float("nan")
    student.requires_grad_(True)
    loss = adapted_feature_match(student, teacher, weight, bias, reduction=reduction, impl="triton")
    if reduction == "none":
        poisoned = torch.zeros_like(loss, dtype=torch.bool)
        poisoned[1, :, 3, 0] = True
        assert torch.all(torch.isnan(loss[poisoned])) and torch.all(torch.isfinite(loss[~poisoned]))
        loss.sum().backward()
        assert torch.all(torch.isnan(student.grad[1, :, 3, 0]))
        student.grad[1, :, 3, 0] = 0.0
        assert torch.all(torch.isfinite(student.grad))
    else:
        assert torch.isnan(loss)


def test_second_backward_through_same_graph_raises(device):
    student, teacher, weight, bias = make_inputs((2, 4, 3, 3), 6, device)
    student.requires_grad_(True)
    loss = adapted_feature_match(student, teacher, weight, bias, impl="triton") * 2.0
    loss.backward(retain_graph=True)
    with pytest.raises(
        RuntimeError, match=r"adapted_feature_match\(impl='triton'\) .* backpropagates once.*impl='reference'"
    ):
        loss.backward()


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_torch_compile_fullgraph_traces_a_training_step(reduction, device, record_error):
    # Student conv + adapter loss in one graph; AOTAutograd traces the backward (in-place scaling
    # functionalized for "mean", the gradient op for "none").
    torch.manual_seed(7)
    student_net = torch.nn.Conv2d(3, 6, 3, padding=1).to(device)
    adapter = torch.nn.Conv2d(6, 10, 1).to(device)
    images = torch.randn(2, 3, 5, 5, device=device)
    teacher_features = torch.randn(2, 10, 5, 5, device=device)
    upstream = torch.rand(2, 10, 5, 5, device=device) + 0.5 if reduction == "none" else 0.5

    def forward(impl):
        loss = adapted_feature_match(student_net(images), teacher_features, adapter.weight, adapter.bias,
                                     reduction=reduction, impl=impl)  # fmt: skip
        return loss * upstream

    def step(forward_fn, impl):
        student_net.zero_grad()
        adapter.zero_grad()
        loss = forward_fn(impl)
        loss.sum().backward()
        return [loss.detach()] + [p.grad.clone() for p in (student_net.weight, adapter.weight, adapter.bias)]

    compiled = step(torch.compile(forward, fullgraph=True, backend="aot_eager"), "triton")
    expected = step(forward, "reference")
    for name, got, want in zip(("loss", "student conv", "adapter weight", "adapter bias"), compiled, expected,
                               strict=True):  # fmt: skip
        record_error(f"adapted torch.compile step {name} vs reference", relative_error(got, want))
        assert relative_error(got, want) < 1e-5, name


def test_float64_runs_the_reference_and_is_refused_by_the_kernel(device):
    torch.manual_seed(8)
    student, teacher, weight, bias = make_inputs((2, 4, 3, 3), 6, device)
    student = student.double()
    with pytest.raises(TypeError, match="float64"):
        adapted_feature_match(student, teacher, weight, bias, impl="triton")
    loss = adapted_feature_match(student, teacher, weight, bias)
    assert loss.dtype == torch.float64
    assert relative_error(loss, oracle(student, teacher, weight, bias)) < 1e-12


@pytest.mark.parametrize(  # fmt: skip
    "dtype, tf32, widest",
    [
        (torch.float32, True, 512),
        (torch.float32, False, 256),
        (torch.bfloat16, True, 1024),
        (torch.float16, True, 1024),
    ],
    ids=str,
)
def test_wide_students_run_the_reference(dtype, tf32, widest, device, monkeypatch, record_error):
    # Up to 1024 student channels with fp16/bf16 products, 512 with TF32 fp32 ones, 256 with IEEE fp32 ones
    # (CUDA-core products, whose operands take more registers): the widest runs on the kernel; one more and
    # impl="triton" explains the limit while impl="auto" (here forced to prefer the kernel, as for CUDA
    # tensors) silently runs the reference instead of launching.
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", tf32)
    torch.manual_seed(14)
    student, teacher, weight, bias = make_inputs((1, widest, 2), 3, device, dtype)
    tolerance = TF32_TOL if dtype == torch.float32 and tf32 and device.type == "cuda" else None
    compare_all(student, teacher, weight, bias, record_error, f"widest student {str(dtype)[6:]}",
                upstream=torch.tensor(1.0, device=device), tolerance=tolerance)  # fmt: skip
    student, teacher, weight, bias = make_inputs((1, widest + 1, 2), 3, device, dtype)
    with pytest.raises(ValueError, match=f"at most {widest} student channels"):
        adapted_feature_match(student, teacher, weight, bias, impl="triton")

    def must_not_launch(*args, **kwargs):
        raise AssertionError(f"the fused kernel was launched for Cs > {widest}")

    monkeypatch.setattr(importlib.import_module("gankd.kernels._dispatch"), "use_triton", lambda impl, op, device: True)
    monkeypatch.setattr(adapter_module, "positions_pass", must_not_launch)
    loss = adapted_feature_match(student, teacher, weight, bias)
    assert torch.equal(loss, adapted_feature_match_ref(student, teacher, weight, bias))


def test_dot_precision_follows_cudnn_allow_tf32(device, monkeypatch):
    # fp32 products: TF32 when cuDNN may use it (what an eager 1x1 conv would do), IEEE otherwise.
    student, _, weight, bias = make_inputs((1, 4, 2), 3, device)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    assert adapter_kernels.launch_config(student, weight, bias, None, "mse")["PRECISION"] == "tf32"
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    config = adapter_kernels.launch_config(student, weight, bias, None, "l1")
    assert config["PRECISION"] == "ieee" and config["KIND"] == 1 and config["BLOCK_CS"] == 16


@pytest.mark.parametrize(
    "change, error, message",
    [
        (dict(weight=torch.zeros(8, 5)), ValueError, r"weight must have shape \[Ct, Cs\] = \[8, 4\]"),
        (dict(weight=torch.zeros(8, 4, 3, 3)), ValueError, r"got \(8, 4, 3, 3\)"),
        (dict(weight=torch.zeros(8)), ValueError, "weight must have shape"),
        (dict(bias=torch.zeros(4)), ValueError, r"bias must have shape \[Ct\] = \[8\]"),
        (dict(teacher=torch.zeros(3, 8, 5, 5)), ValueError, "batch and spatial"),
        (dict(teacher=torch.zeros(2, 8, 5, 4)), ValueError, r"\(2, 4, 5, 5\) and \(2, 8, 5, 4\)"),
        (dict(teacher=torch.zeros(2, 8, 25)), ValueError, "batch and spatial"),
        (dict(student=torch.zeros(4)), ValueError, "student must have shape"),
        (dict(student=torch.zeros(2, 4, 5, 5, dtype=torch.int64)), TypeError, "student must be float16"),
        (dict(teacher=torch.zeros(2, 8, 5, 5, dtype=torch.int32)), TypeError, "teacher must be float16"),
        (dict(weight=torch.zeros(8, 4, dtype=torch.int8)), TypeError, "weight must be float16"),
        (dict(bias=[0.0] * 8), TypeError, "bias must be a torch.Tensor"),
        (dict(weight=torch.zeros(8, 4, device="meta")), ValueError, "same device"),
        (dict(kind="cosine"), ValueError, "kind must be one of"),
        (dict(kind="smooth_l1"), ValueError, "kind must be one of"),
        (dict(reduction="batchmean"), ValueError, "reduction must be one of"),
        (dict(impl="fast"), ValueError, "impl must be one of"),
    ],
)
def test_bad_input_is_refused_by_name(change, error, message):
    arguments = dict(student=torch.zeros(2, 4, 5, 5), teacher=torch.zeros(2, 8, 5, 5), weight=torch.zeros(8, 4, 1, 1),
                     bias=torch.zeros(8)) | change  # fmt: skip
    options = {key: arguments.pop(key) for key in ("kind", "reduction", "impl") if key in arguments}
    for fn in (adapted_feature_match, adapted_feature_match_ref):
        if fn is adapted_feature_match_ref and "impl" in options:
            continue
        with pytest.raises(error, match=message):
            fn(**arguments, **options)


# Compiled-kernel checks that need a GPU: the benchmark shape, the widest student, TF32, int64
# offsets, no host sync.


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("kind", KINDS)
def test_gan_compression_shape(kind, dtype, device, record_error):
    require_cuda(device)
    torch.manual_seed(9)
    student, teacher, weight, bias = make_inputs((16, 128, 64, 64), 512, device, dtype)
    if kind == "l1":
        # |y - t| >= 0.1 everywhere (y = W s + b): l1's slope is sign(y - t), and among 33.5M elements some
        # lie so near a tie that the kernel's and torch's rounding of y give opposite signs.
        adapted = F.conv2d(student.double(), weight.double(), bias.double())
        gap = teacher.double() - adapted
        teacher = (adapted + torch.where(gap >= 0, 1.0, -1.0) * gap.abs().clamp(min=0.1)).to(dtype).requires_grad_()
    compare_all(student, teacher, weight, bias, record_error, f"16x128->512x64x64 {kind} {str(dtype)[6:]}",
                upstream=0.7 * loss_scale(dtype, device), kind=kind)  # fmt: skip


@pytest.mark.gpu
@pytest.mark.parametrize(
    "n_student, dtype",
    [(256, torch.float32), (512, torch.float32), (256, torch.bfloat16), (1024, torch.bfloat16), (1024, torch.float16)],
    ids=str,
)
def test_wide_students_and_channels_last(n_student, dtype, device, monkeypatch, record_error):
    require_cuda(device)
    # fp32 students over MAX_STUDENT_CHANNELS_IEEE channels run with TF32 products only (torch's default).
    tf32 = dtype == torch.float32 and n_student > adapter_kernels.MAX_STUDENT_CHANNELS_IEEE
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", tf32)
    torch.manual_seed(10)
    student, teacher, weight, bias = make_inputs((4, n_student, 24, 24), 384, device, dtype)
    student = student.to(memory_format=torch.channels_last)
    compare_all(student, teacher, weight, bias, record_error, f"Cs={n_student} {str(dtype)[6:]}", reduction="none",
                upstream=upstream_for("none", teacher), tolerance=TF32_TOL if tf32 else None)  # fmt: skip


@pytest.mark.gpu
def test_tf32_products_for_float32(device, monkeypatch, record_error):
    # With cuDNN's TF32 allowed (torch's default) fp32 products round their inputs to 10 mantissa bits, as an
    # eager 1x1 conv does: agreement with float64 to ~1e-3, not 1e-5.
    require_cuda(device)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    torch.manual_seed(11)
    student, teacher, weight, bias = make_inputs((8, 128, 32, 32), 512, device)
    kernel = run_with_grads(triton_path, student, teacher, weight, bias, torch.tensor(1.0, device=device))
    expected = run_with_grads(oracle, student, teacher, weight, bias, torch.tensor(1.0, device=device),
                              as_float64=True)  # fmt: skip
    for name, got, want in zip(GRAD_NAMES, kernel, expected, strict=True):
        record_error(f"adapted tf32 {name} vs float64", relative_error(got, want))
        assert relative_error(got, want) < 5e-3, name


@pytest.mark.gpu
def test_more_than_2_31_teacher_elements_use_64_bit_offsets(device):
    require_cuda(device)
    torch.manual_seed(12)
    # Teacher 9 x 1024 x 512 x 512 = 2^31 + 2^28 elements (bf16): the last sample lies past 2^31.
    student = torch.randn(9, 16, 512, 512, device=device, dtype=torch.bfloat16, requires_grad=True)
    teacher = torch.randn(9, 1024, 512, 512, device=device, dtype=torch.bfloat16)
    teacher[-1, -1, -1, -1] = 100.0
    weight = torch.randn(1024, 16, device=device, dtype=torch.bfloat16) / 4
    per_element = adapted_feature_match(student, teacher, weight, reduction="none", impl="triton")
    per_element[-1:].sum().backward()
    tail = student.detach()[-1:].clone().requires_grad_(True)
    expected = adapted_feature_match_ref(tail, teacher[-1:], weight, reduction="none")
    expected.sum().backward()
    assert relative_error(per_element[-1:], expected) < 1e-5
    assert relative_error(student.grad[-1:], tail.grad) <= GRAD_TOL[torch.bfloat16]
    assert torch.all(student.grad[:-1] == 0)


@pytest.mark.gpu
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_no_host_sync(reduction, device):
    require_cuda(device)
    torch.manual_seed(13)
    student, teacher, weight, bias = make_inputs((4, 64, 16, 16), 128, device, torch.bfloat16)
    student.requires_grad_(True)
    bias.requires_grad_(True)
    torch.cuda.set_sync_debug_mode("error")
    try:
        loss = adapted_feature_match(student, teacher, weight, bias, reduction=reduction, impl="triton")
        (loss * 0.5).sum().backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert student.grad is not None and weight.grad is not None and bias.grad is not None


def test_reference_keeps_fp32_under_autocast():
    # The specification accumulates in fp32 or wider: an enclosing autocast must not run its product in bf16 (the
    # kernels ignore autocast, and impl="auto" falls back to the reference for wide adapters and float64).
    torch.manual_seed(0)
    student, teacher, weight = torch.randn(2, 64, 4, 4) * 30, torch.randn(2, 8, 4, 4), torch.randn(8, 64)
    expected = oracle(student, teacher, weight)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = adapted_feature_match_ref(student, teacher, weight)
    assert loss.dtype == torch.float32
    assert relative_error(loss, expected) < 1e-6
