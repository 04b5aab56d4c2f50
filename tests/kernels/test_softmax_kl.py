"""softmax_kl: the Triton kernel against the reference and an independent float64 computation.

On a machine without a GPU the kernel runs under the Triton interpreter (see tests/conftest.py).
"""

import functools
import importlib
import math

import pytest
import torch
import torch.nn.functional as F
from compare import ARITHMETIC_OPS, relative_error, require_cuda, torch_ops_called

from gankd.kernels import softmax_kl, softmax_kl_ref

softmax_kl_module = importlib.import_module("gankd.kernels.softmax_kl")

DIRECTIONS = ("forward", "reverse", "jsd")
REDUCTIONS = ("batchmean", "sum", "none")
DTYPES = (torch.float32, torch.float16, torch.bfloat16)
# Relative tolerance (to the largest magnitude) per dtype: values are computed in fp32 on both paths,
# gradients are rounded once to the storage dtype.
GRAD_TOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2, torch.float64: 1e-5}
LOSS_TOL = 1e-5
# The float64 oracle sees the same low-precision inputs, so only fp32 arithmetic separates them.
ORACLE_TOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}


@pytest.fixture(params=["row programs", "split rows"])
def small_blocks(request, monkeypatch):
    """Stream rows in 16-wide blocks so that small test rows span several blocks; run each such test with one
    program per row, and with rows split into slices of one or more blocks (the few-long-rows variant)."""
    monkeypatch.setattr(softmax_kl_module, "MAX_BLOCK_V", 16)
    if request.param == "row programs":
        monkeypatch.setattr(softmax_kl_module, "_row_splits", lambda n_rows, n_cols, block, sm_count: (1, 0))
    else:  # as many slices as the heuristic allows: as if the GPU had a million SMs
        monkeypatch.setattr(softmax_kl_module, "_sm_count", lambda device: 10**6)
        monkeypatch.setattr(softmax_kl_module, "MIN_SPLIT_BLOCKS", 1)
    return request.param


def oracle(student, teacher, temperature=1.0, *, direction="forward", beta=0.5, t2_scale=True, labels=None,
           kd_weight=1.0, ce_weight=0.0, ignore_index=-100, reduction="batchmean"):  # fmt: skip
    """Independent float64 loss written with torch's kl_div and cross_entropy."""
    n_classes = student.shape[-1]
    log_ps = F.log_softmax(student.double() / temperature, dim=-1)
    log_pt = F.log_softmax(teacher.double() / temperature, dim=-1)

    def kl(log_p, log_q):  # KL(p || q), kl_div(input=log q, target=log p)
        return F.kl_div(log_q, log_p, reduction="none", log_target=True).sum(-1)

    if direction == "forward":
        divergence = kl(log_pt, log_ps)
    elif direction == "reverse":
        divergence = kl(log_ps, log_pt)
    else:
        log_m = torch.log(beta * log_pt.exp() + (1 - beta) * log_ps.exp())
        divergence = beta * kl(log_pt, log_m) + (1 - beta) * kl(log_ps, log_m)
    loss = kd_weight * (temperature**2 if t2_scale else 1.0) * divergence
    count = loss.numel()
    if labels is not None:
        flat = labels.reshape(-1)
        ce = F.cross_entropy(student.double().reshape(-1, n_classes), flat, ignore_index=ignore_index,
                             reduction="none").reshape(labels.shape)  # fmt: skip
        counted = labels != ignore_index
        loss = torch.where(counted, loss + ce_weight * ce, torch.zeros_like(loss))
        count = max(int(counted.sum()), 1)
    if reduction == "none":
        return loss
    return loss.sum() / count if reduction == "batchmean" else loss.sum()


def run_with_grads(fn, student, teacher, upstream, **kwargs):
    """Loss value and gradients of (loss * upstream).sum() w.r.t. fresh leaf copies of the inputs."""
    student = student.detach().clone().requires_grad_(True)
    teacher = teacher.detach().clone().requires_grad_(teacher.requires_grad)
    loss = fn(student, teacher, **kwargs)
    (loss * upstream).sum().backward()
    return loss.detach(), student.grad, teacher.grad


def compare_all(student, teacher, record_error, label, *, upstream=None, dtype=torch.float32, **kwargs):
    """Kernel vs reference vs float64 oracle: the loss and every gradient."""
    kernel = run_with_grads(softmax_kl, student, teacher, upstream, impl="triton", **kwargs)
    reference = run_with_grads(softmax_kl_ref, student, teacher, upstream, **kwargs)
    expected = run_with_grads(oracle, student.double(), teacher.double(), upstream.double(), **kwargs)
    assert kernel[0].dtype == torch.float32 and kernel[0].shape == expected[0].shape
    assert kernel[1].dtype == student.dtype and kernel[1].shape == student.shape
    for name, got, ref, exact in zip(
        ("loss", "grad_student", "grad_teacher"), kernel, reference, expected, strict=True
    ):
        if exact is None:
            assert got is None and ref is None
            continue
        tol = LOSS_TOL if name == "loss" else GRAD_TOL[dtype]
        error_vs_ref = relative_error(got, ref)
        error_vs_exact = relative_error(got, exact)
        record_error(f"{label} {name} vs reference", error_vs_ref)
        record_error(f"{label} {name} vs float64", error_vs_exact)
        assert error_vs_ref <= tol, f"{name}: {error_vs_ref:.2e} from the reference"
        assert error_vs_exact <= max(tol, ORACLE_TOL[dtype] if name == "loss" else tol), name
    return kernel


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("direction", DIRECTIONS)
def test_matches_reference_and_float64(direction, reduction, dtype, device, small_blocks, record_error):
    torch.manual_seed(0)
    # Leading dims (2, 3), V = 37 spans three 16-wide blocks; teacher gets a gradient too.
    student = (torch.randn(2, 3, 37, device=device) * 3).to(dtype)
    teacher = (torch.randn(2, 3, 37, device=device) * 3).to(dtype).requires_grad_(True)
    upstream = torch.rand(2, 3, device=device) + 0.5 if reduction == "none" else torch.tensor(0.37, device=device)
    compare_all(student, teacher, record_error, f"{direction} {str(dtype)[6:]}", upstream=upstream, dtype=dtype,
                temperature=2.5, direction=direction, reduction=reduction, beta=0.3)  # fmt: skip


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize(
    "options",
    [
        dict(t2_scale=False, kd_weight=0.5),
        dict(ce_weight=0.7, kd_weight=0.3),
        dict(ce_weight=1.0, reduction="none"),
        dict(ce_weight=0.0),  # labels only mask rows
        dict(ce_weight=0.5, reduction="sum", temperature=1.0),
    ],
    ids=["no_t2", "kd+ce", "ce_none", "mask_only", "ce_sum_T1"],
)
def test_options_with_labels(direction, options, device, small_blocks, record_error):
    torch.manual_seed(1)
    student = torch.randn(7, 29, device=device) * 2
    teacher = torch.randn(7, 29, device=device) * 2
    labels = torch.tensor([3, -100, 0, 28, -100, 11, 5], device=device)
    kwargs = dict(temperature=3.0, direction=direction, labels=labels, reduction="batchmean") | options
    upstream = torch.rand(7, device=device) + 0.5 if kwargs["reduction"] == "none" else torch.tensor(1.0, device=device)
    loss, grad_s, _ = compare_all(student, teacher, record_error, f"{direction} options", upstream=upstream, **kwargs)
    ignored = labels == -100
    assert torch.all(grad_s[ignored] == 0)
    if kwargs["reduction"] == "none":
        assert torch.all(loss[ignored] == 0)


@pytest.mark.parametrize("reduction", ["batchmean", "none"])
def test_strided_labels(reduction, device, small_blocks):
    # A strided 1-D view of labels (every other element) was read as if packed: wrong rows, NaN or silently wrong.
    student = torch.randn(4, 30, device=device, requires_grad=True)
    teacher = torch.randn(4, 30, device=device)
    labels = torch.tensor([1, 99, -100, 99, 5, 99, 7, 99], device=device)[::2]
    options = dict(labels=labels, ce_weight=0.5, reduction=reduction)
    got, expected = (fn(student, teacher, 2.0, **options) for fn in (functools.partial(softmax_kl, impl="triton"),
                                                                      softmax_kl_ref))  # fmt: skip
    torch.testing.assert_close(got, expected)
    grad_got, grad_expected = (torch.autograd.grad(value.sum(), student)[0] for value in (got, expected))
    torch.testing.assert_close(grad_got, grad_expected)


@pytest.mark.parametrize(
    "student_dtype, teacher_dtype",
    [(torch.bfloat16, torch.float32), (torch.float32, torch.float16), (torch.float16, torch.bfloat16)],
    ids=str,
)
def test_mixed_dtypes_and_int32_labels(student_dtype, teacher_dtype, device, small_blocks, record_error):
    # Each input is loaded in its own dtype; each gradient comes back in its input's dtype.
    torch.manual_seed(11)
    student = torch.randn(5, 40, device=device).to(student_dtype)
    teacher = torch.randn(5, 40, device=device).to(teacher_dtype).requires_grad_(True)
    labels = torch.tensor([0, 39, -100, 7, 7], device=device, dtype=torch.int32)
    kernel = run_with_grads(softmax_kl, student, teacher, 1.0, temperature=2.0, labels=labels, ce_weight=0.5,
                            impl="triton")  # fmt: skip
    reference = run_with_grads(softmax_kl_ref, student, teacher, 1.0, temperature=2.0, labels=labels, ce_weight=0.5)
    assert kernel[1].dtype == student_dtype and kernel[2].dtype == teacher_dtype
    assert relative_error(kernel[0], reference[0]) <= LOSS_TOL
    for got, expected, dtype in ((kernel[1], reference[1], student_dtype), (kernel[2], reference[2], teacher_dtype)):
        record_error("mixed dtypes grad vs reference", relative_error(got, expected))
        assert relative_error(got, expected) <= GRAD_TOL[dtype]


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_all_rows_ignored_gives_zero_not_nan(reduction, device):
    # Ignored rows hold NaN: they must neither be read into the loss nor into the gradient.
    student = torch.full((3, 10), float("nan"), device=device, requires_grad=True)
    teacher = torch.randn(3, 10, device=device)
    labels = torch.full((3,), -1, device=device)
    loss = softmax_kl(student, teacher, labels=labels, ignore_index=-1, ce_weight=1.0, reduction=reduction,
                      impl="triton")  # fmt: skip
    loss.sum().backward()
    assert torch.all(loss == 0)
    assert torch.all(student.grad == 0)


@pytest.mark.parametrize("n_classes", [1, 2, 17, 64, 65, 1000, 5000])
def test_widths_with_default_blocks(n_classes, device, record_error):
    # Odd widths, widths at and above the default block (4096): one launch configuration each.
    torch.manual_seed(2)
    student = torch.randn(3, n_classes, device=device)
    teacher = torch.randn(3, n_classes, device=device)
    compare_all(student, teacher, record_error, "widths", upstream=torch.tensor(1.0, device=device), temperature=1.5)


def test_widest_rows(device, record_error):
    # V = 262,145: 65 blocks of 4096 per pass.
    torch.manual_seed(3)
    student = torch.randn(2, 262_145, device=device)
    teacher = torch.randn(2, 262_145, device=device).requires_grad_(True)
    compare_all(student, teacher, record_error, "V=262145", upstream=torch.tensor(2.0, device=device))


@pytest.mark.parametrize("layout", ["transposed", "row_slice", "column_slice"])
def test_non_contiguous_inputs(layout, device, small_blocks, record_error):
    torch.manual_seed(4)
    if layout == "transposed":  # classes dim has stride != 1: copied to rows
        student = torch.randn(33, 6, device=device).t()
        teacher = torch.randn(33, 6, device=device).t()
    elif layout == "row_slice":  # every other row: a view with row stride 2V
        student = torch.randn(12, 33, device=device)[::2]
        teacher = torch.randn(12, 33, device=device)[::2]
    else:  # a column window: row stride 50 > V = 33
        student = torch.randn(6, 50, device=device)[:, 5:38]
        teacher = torch.randn(6, 50, device=device)[:, 7:40]
    assert not student.is_contiguous()
    compare_all(student, teacher.requires_grad_(True), record_error, "non-contiguous",
                upstream=torch.tensor(0.5, device=device), temperature=2.0)  # fmt: skip


@pytest.mark.parametrize("impl", ["triton", "reference"])
@pytest.mark.parametrize("ce_weight", [0.0, 0.5])
@pytest.mark.parametrize("direction", DIRECTIONS)
def test_masked_classes_are_absent_classes(direction, ce_weight, impl, device, small_blocks):
    # -inf at the same place in both rows: the loss equals the loss with those columns removed, the
    # gradient there is exactly 0, on both paths (torch.logaddexp(-inf, -inf) has a NaN gradient: the
    # reference's JSD must go around it). The first 20 columns fill whole 16-wide blocks with -inf.
    torch.manual_seed(5)
    student = torch.randn(4, 45, device=device)
    teacher = torch.randn(4, 45, device=device)
    masked = torch.zeros(45, dtype=torch.bool, device=device)
    masked[:20] = True
    masked[[25, 31, 44]] = True
    labels = torch.tensor([21, 30, 43, 20], device=device)  # unmasked classes
    kept_index = torch.cumsum(~masked, 0) - 1  # a kept column's index once the masked ones are removed
    with_labels = dict(labels=labels, ce_weight=ce_weight) if ce_weight else {}
    kept_labels = dict(labels=kept_index[labels], ce_weight=ce_weight) if ce_weight else {}
    student_masked = student.masked_fill(masked, float("-inf")).requires_grad_(True)
    teacher_masked = teacher.masked_fill(masked, float("-inf")).requires_grad_(True)
    loss = softmax_kl(student_masked, teacher_masked, 2.0, direction=direction, impl=impl, **with_labels)
    loss.backward()
    kept = softmax_kl_ref(student[:, ~masked], teacher[:, ~masked], 2.0, direction=direction, **kept_labels)
    assert torch.isfinite(loss)
    assert math.isclose(loss.item(), kept.item(), rel_tol=1e-5, abs_tol=1e-7)
    for grad in (student_masked.grad, teacher_masked.grad):
        assert torch.all(grad[:, masked] == 0)
        assert torch.all(torch.isfinite(grad))


def test_reference_jsd_gradient_where_both_rows_are_minus_infinity():
    student = torch.tensor([[0.0, 1.0, float("-inf")]], requires_grad=True)
    softmax_kl_ref(student, torch.tensor([[1.0, 0.0, float("-inf")]]), direction="jsd").backward()
    torch.testing.assert_close(student.grad, torch.tensor([[-0.0983, 0.0983, 0.0]]), rtol=0, atol=1e-4)


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_huge_logits_do_not_overflow(direction, device, record_error):
    # Logits around +1e4 (student) and -1e4 (teacher): softmax is shift-invariant, so the loss is that of
    # the spread alone; fp32 rounding of 1e4-sized logits (~1e-3 absolute) bounds the agreement.
    torch.manual_seed(6)
    student = (torch.randn(4, 300, device=device) * 3 + 1e4).requires_grad_(True)
    teacher = (torch.randn(4, 300, device=device) * 3 - 1e4).requires_grad_(True)
    loss = softmax_kl(student, teacher, 2.0, direction=direction, impl="triton")
    loss.backward()
    expected = oracle(student.detach().double(), teacher.detach().double(), 2.0, direction=direction)
    record_error(f"huge logits (1e4 offset) {direction} loss vs float64", relative_error(loss, expected))
    assert relative_error(loss, expected) < 1e-3
    assert torch.all(torch.isfinite(student.grad)) and torch.all(torch.isfinite(teacher.grad))

    # Spread of 1e4: near one-hot distributions, still finite and equal to the reference.
    spread_student = torch.randn(4, 300, device=device) * 1e4
    spread_teacher = (spread_student + torch.randn(4, 300, device=device) * 1e3).requires_grad_(True)
    kernel = run_with_grads(softmax_kl, spread_student, spread_teacher, 1.0, direction=direction, impl="triton")
    reference = run_with_grads(softmax_kl_ref, spread_student, spread_teacher, 1.0, direction=direction)
    for got, expected in zip(kernel, reference, strict=True):
        assert torch.all(torch.isfinite(got))
        assert torch.allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_nan_input_gives_nan(device):
    student = torch.randn(3, 20, device=device)
    student[1, 7] = float("nan")
    teacher = torch.randn(3, 20, device=device)
    per_row = softmax_kl(student, teacher, reduction="none", impl="triton")
    assert torch.isnan(per_row[1]) and torch.all(torch.isfinite(per_row[[0, 2]]))
    assert torch.isnan(softmax_kl(student, teacher, impl="triton"))
    assert torch.isnan(softmax_kl_ref(student, teacher))


def test_out_of_range_label_on_the_device_path_gives_nan(device):
    # The GPU path cannot raise without a host sync: the kernel marks such a row NaN instead.
    student = torch.randn(3, 8, device=device)
    labels = torch.tensor([1, 8, -100], device=device)
    loss, grad_s, *_ = torch.ops.gankd.softmax_kl(student, student.clone(), labels, None, 1, 1.0, "forward", 0.5,
                                                 1.0, 1.0, -100, "none", True, False)  # fmt: skip
    assert torch.isfinite(loss[0]) and torch.isnan(loss[1]) and loss[2] == 0
    assert torch.all(torch.isnan(grad_s[1])) and torch.all(grad_s[2] == 0)


@pytest.mark.parametrize("with_labels", [False, True], ids=["no labels", "labels"])
@pytest.mark.parametrize("reduction", ["batchmean", "sum", "none"])
def test_forward_is_the_kernel_and_one_sum(reduction, with_labels, device):
    # The rows' weights (batchmean's 1 / rows counted) are applied in the kernel: no tensor of 1 / N is made and
    # the reduced loss is one sum, so a small classifier call (256 x 1000) is two launches, not four. Counting
    # labelled rows for batchmean takes a comparison and a sum, no more.
    student = torch.randn(6, 40, device=device, requires_grad=True)
    teacher = torch.randn(6, 40, device=device)
    labels = torch.tensor([3, -100, 0, 39, -100, 7], device=device) if with_labels else None
    options = dict(reduction=reduction, labels=labels, ce_weight=0.5 if with_labels else 0.0)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        loss = softmax_kl(student, teacher, 2.0, impl="triton", **options)
    names = torch_ops_called(profile)
    assert not [name for name in names if name in ARITHMETIC_OPS]
    counting = with_labels and reduction == "batchmean"
    assert names.count("aten::sum") == (reduction != "none") + counting
    torch.testing.assert_close(loss, softmax_kl_ref(student, teacher, 2.0, **options))


def test_gradients_only_where_asked(device):
    student = torch.randn(4, 30, device=device, requires_grad=True)
    teacher = torch.randn(4, 30, device=device, requires_grad=True)
    with torch.no_grad():
        value = softmax_kl(student, teacher, impl="triton")
    assert value.grad_fn is None
    assert math.isclose(value.item(), softmax_kl_ref(student, teacher).item(), rel_tol=1e-5)
    softmax_kl(student, teacher.detach(), impl="triton").backward()
    assert student.grad is not None and teacher.grad is None


def test_second_backward_through_same_graph_raises(device):
    student = torch.randn(4, 30, device=device, requires_grad=True)
    loss = softmax_kl(student, torch.randn(4, 30, device=device), impl="triton") * 2.0
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match=r"softmax_kl\(impl='triton'\) .* backpropagates once.*impl='reference'"):
        loss.backward()


@pytest.mark.parametrize("reduction", ["batchmean", "none"])
@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_torch_compile_fullgraph_traces_a_training_step(backend, reduction, device, record_error):
    # The forward (model + loss) is one graph; AOTAutograd compiles the backward, with the in-place
    # gradient scaling functionalized.
    torch.manual_seed(7)
    student_net = torch.nn.Linear(12, 40).to(device)
    inputs = torch.randn(8, 12, device=device)
    teacher_logits = torch.randn(8, 40, device=device)
    upstream = torch.linspace(0.5, 2.0, 8, device=device) if reduction == "none" else 0.5

    def forward(impl):
        return softmax_kl(student_net(inputs), teacher_logits, 2.0, reduction=reduction, impl=impl) * upstream

    def step(forward_fn, impl):
        student_net.zero_grad()
        loss = forward_fn(impl)
        loss.sum().backward()
        return loss.detach(), student_net.weight.grad.clone()

    loss, grad = step(torch.compile(forward, fullgraph=True, backend=backend), "triton")
    expected_loss, expected_grad = step(forward, "reference")
    assert torch.allclose(loss, expected_loss, rtol=1e-5, atol=1e-7)
    record_error("torch.compile step grad vs reference", relative_error(grad, expected_grad))
    assert relative_error(grad, expected_grad) < 1e-5


# Compiled-kernel checks that need a GPU: large shapes, int64 offsets, no host sync, CUDA graphs.


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("direction", DIRECTIONS)
def test_large_vocabulary(direction, dtype, device, record_error):
    require_cuda(device)
    torch.manual_seed(8)
    student = (torch.randn(64, 131_072, device=device) * 4).to(dtype)
    teacher = (torch.randn(64, 131_072, device=device) * 4).to(dtype).requires_grad_(True)
    compare_all(student, teacher, record_error, f"V=131072 {direction} {str(dtype)[6:]}", dtype=dtype,
                upstream=torch.tensor(0.7, device=device), temperature=2.0, direction=direction)  # fmt: skip


@pytest.mark.gpu
def test_more_than_2_31_elements_use_64_bit_offsets(device):
    require_cuda(device)
    n_rows, n_classes = 16_400, 131_072  # N·V = 2,149,580,800 > 2^31
    torch.manual_seed(9)
    student = torch.randn(n_rows, n_classes, device=device, dtype=torch.bfloat16, requires_grad=True)
    teacher = torch.randn(n_rows, n_classes, device=device, dtype=torch.bfloat16)
    per_row = softmax_kl(student, teacher, 2.0, reduction="none", impl="triton")
    per_row.sum().backward()
    # Rows are independent: the last rows, past 2^31 elements, must match the reference on those rows.
    tail_student = student.detach()[-3:].clone().requires_grad_(True)
    expected = softmax_kl_ref(tail_student, teacher[-3:], 2.0, reduction="none")
    expected.sum().backward()
    assert torch.allclose(per_row[-3:], expected, rtol=1e-5, atol=1e-6)
    assert relative_error(student.grad[-3:], tail_student.grad) <= GRAD_TOL[torch.bfloat16]


@pytest.mark.gpu
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_no_host_sync_and_cuda_graph_capture(reduction, device):
    # The launch-bound classifier case: 256 x 1000 with labels, forward and backward.
    require_cuda(device)
    torch.manual_seed(10)
    student = torch.randn(256, 1000, device=device, requires_grad=True)
    teacher = torch.randn(256, 1000, device=device)
    labels = torch.randint(0, 1000, (256,), device=device)
    labels[::7] = -100

    def step():
        loss = softmax_kl(student, teacher, 4.0, labels=labels, ce_weight=0.5, reduction=reduction, impl="triton")
        (loss * 0.5).sum().backward()
        return loss

    torch.cuda.set_sync_debug_mode("error")
    try:
        step()
    finally:
        torch.cuda.set_sync_debug_mode("default")

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):
            student.grad = None
            step()
    torch.cuda.current_stream().wait_stream(side)
    student.grad = None
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured_loss = step()
    student.data.normal_()  # new inputs, same buffers
    graph.replay()
    torch.cuda.synchronize()
    fresh = student.detach().clone().requires_grad_(True)
    expected = softmax_kl_ref(fresh, teacher, 4.0, labels=labels, ce_weight=0.5, reduction=reduction)
    (expected * 0.5).sum().backward()
    assert torch.allclose(captured_loss, expected, rtol=1e-5, atol=1e-6)
    assert relative_error(student.grad, fresh.grad) < 1e-5


class _LaunchSpy:
    """Stands in for a Triton kernel and counts its launches."""

    def __init__(self, kernel):
        self.kernel, self.grids = kernel, []

    def __getitem__(self, grid):
        self.grids.append(grid)
        return self.kernel[grid]


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_split_rows_launch_slices_that_agree_with_one_program_per_row(direction, device, monkeypatch):
    # 3 rows of 100 classes in 16-wide blocks: 7 blocks, split into slices of 3 blocks (48, 48 and 4 classes);
    # the first slice holds only masked (-inf) classes, in the teacher and the student.
    monkeypatch.setattr(softmax_kl_module, "MAX_BLOCK_V", 16)
    monkeypatch.setattr(softmax_kl_module, "_sm_count", lambda device: 100)
    torch.manual_seed(0)
    student, teacher = torch.randn(2, 3, 100, device=device) * 3
    student[:, :48] = teacher[:, :48] = float("-inf")
    labels = torch.tensor([60, -100, 99], device=device)
    kernels = ("_softmax_kl_kernel", "_split_stats_kernel", "_split_mixture_kernel", "_split_loss_grad_kernel")
    spies = {name: _LaunchSpy(getattr(softmax_kl_module, name)) for name in kernels}
    for name, spy in spies.items():
        monkeypatch.setattr(softmax_kl_module, name, spy)
    options = dict(direction=direction, labels=labels, ce_weight=0.5, temperature=2.0)
    split = run_with_grads(softmax_kl, student, teacher.requires_grad_(), torch.tensor(0.7), impl="triton", **options)
    assert spies["_softmax_kl_kernel"].grids == [] and spies["_split_stats_kernel"].grids == [(3, 3)]
    assert spies["_split_mixture_kernel"].grids == ([(3, 3)] if direction == "jsd" else [])
    assert spies["_split_loss_grad_kernel"].grids == [(3, 3)]
    reference = run_with_grads(softmax_kl_ref, student, teacher, torch.tensor(0.7), **options)
    for got, expected in zip(split, reference, strict=True):
        assert relative_error(got, expected) <= 1e-5
    zeros = torch.zeros(3, 48, device=device)
    assert torch.equal(split[1][:, :48], zeros) and torch.equal(split[2][:, :48], zeros)
    with torch.no_grad():  # without gradients only the loss programs run: one per row
        loss = softmax_kl(student, teacher, impl="triton", **options)
    assert spies["_split_loss_grad_kernel"].grids[-1] == (3, 1) and relative_error(loss, reference[0]) <= 1e-5


@pytest.mark.parametrize("alternate", [True, False], ids=["alternate", "one_way"])
@pytest.mark.parametrize("direction", DIRECTIONS)
def test_passes_in_either_direction_agree(direction, alternate, device, small_blocks, monkeypatch):
    # Passes after the first run last block to first (ALTERNATE_PASSES) or in order; V = 61 ends in a partial
    # block, and in split rows the last slice is shorter than the others. Both give the reference's values.
    monkeypatch.setattr(softmax_kl_module, "ALTERNATE_PASSES", alternate)
    torch.manual_seed(7)
    student, teacher = torch.randn(5, 61, device=device) * 3, torch.randn(5, 61, device=device) * 3
    options = dict(direction=direction, labels=torch.tensor([3, 60, -100, 0, 17], device=device), ce_weight=0.4,
                   temperature=1.5)  # fmt: skip
    got = run_with_grads(softmax_kl, student, teacher.requires_grad_(), torch.tensor(1.3), impl="triton", **options)
    expected = run_with_grads(softmax_kl_ref, student, teacher, torch.tensor(1.3), **options)
    for value, reference in zip(got, expected, strict=True):
        assert relative_error(value, reference) <= 1e-5


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("split", [(2, 3), (2, 2), (1, 4)], ids=["3-block slices", "2-block slices", "one row"])
def test_backward_passes_over_slices_of_several_blocks(split, direction, device, monkeypatch):
    # V = 61 in 16-wide blocks (4 blocks, the last partial): slices of 3 + 1, 2 + 2 blocks, and the whole row in
    # one program, each later pass walking its slice's blocks last to first.
    monkeypatch.setattr(softmax_kl_module, "MAX_BLOCK_V", 16)
    monkeypatch.setattr(softmax_kl_module, "_row_splits", lambda n_rows, n_cols, block, sm_count: split)
    torch.manual_seed(8)
    student, teacher = torch.randn(3, 61, device=device) * 3, torch.randn(3, 61, device=device) * 3
    options = dict(direction=direction, labels=torch.tensor([3, 60, 33], device=device), ce_weight=0.4)
    got = run_with_grads(softmax_kl, student, teacher.requires_grad_(), torch.tensor(1.3), impl="triton", **options)
    expected = run_with_grads(softmax_kl_ref, student, teacher, torch.tensor(1.3), **options)
    for value, reference in zip(got, expected, strict=True):
        assert relative_error(value, reference) <= 1e-5


def test_rows_split_only_when_too_few_to_fill_the_gpu():
    splits = softmax_kl_module._row_splits
    h100 = 132
    # The benchmark shapes at BLOCK_V 4096: every one gives each of the H100's 132 SMs a program at least.
    for rows, classes, expected in [(256, 1000, 1), (64, 32768, 4), (32, 131072, 8), (16, 262144, 16)]:
        block = min(4096, triton_next_power_of_2(classes))
        count, chunk_blocks = splits(rows, classes, block, h100)
        assert count == expected, (rows, classes, count)
        assert count * chunk_blocks * block >= classes > (count - 1) * chunk_blocks * block  # every class, once
        assert rows * count >= h100
    assert splits(8, 4096, 4096, h100) == (1, 1)  # one block: nothing to split
    assert splits(4, 4096 * 1000, 4096, h100) == (63, 16)  # at most MAX_SPLITS (64) slices
    assert splits(264, 262144, 4096, h100) == (1, 64)  # enough rows already


def triton_next_power_of_2(n: int) -> int:
    return 1 << (n - 1).bit_length()
