"""Temperature-scaled softmax-KL distillation loss: Triton kernels, custom op, reference and dispatcher.

One launch per call computes each row's loss and writes the student gradient (and the teacher's, when it
requires grad) for upstream gradient 1. Backward only rescales that buffer in place when the upstream
gradient differs from 1, and reads the upstream value on the device to decide, so there is no host sync.
"""

import math

import torch
from torch import Tensor

from ._dispatch import tl, triton, use_triton
from ._softmax_kl_args import check_inputs, check_label_values, check_softmax_kl_options

_DIRECTION_CODE = {"forward": 0, "reverse": 1, "jsd": 2}

# Widest block a row is streamed in; rows wider than this take several blocks per pass.
MAX_BLOCK_V = 4096
# A register cap for ptxas: without it, sm_80 builds of the forward-only variants with CE (BLOCK_V 4096,
# 8 warps) stopped at 64 registers and spilled 8 bytes; with it no variant spills and none needs more than
# 128 (benchmarks/results/compile_report.csv; python -m benchmarks.compile_gate --ops softmax_kl).
MAX_REGISTERS = 128
SCALE_BLOCK = 1024


@triton.jit
def _online_lse_step(m, z, x, scale):
    # One block of an online log-sum-exp of x * scale, kept relative to the running max m of the raw x:
    # z = sum exp((x - m) * scale). Subtracting before scaling keeps 1e4-sized logits exact.
    # A block of only -inf (masked classes, padding) leaves z at 0 instead of producing NaN.
    m_new = tl.maximum(m, tl.max(x, axis=0))
    m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
    alpha = tl.exp((m - m_safe) * scale)
    e = tl.exp((x - m_safe) * scale)
    return m_new, z * alpha + tl.sum(e, axis=0), alpha, e, m_safe


@triton.jit
def _max_shift(m_old, m_new):
    # How far a running max moved; 0 while nothing finite has been seen (its sums are still 0).
    return tl.where(m_old == float("-inf"), 0.0, m_new - m_old)


@triton.jit
def _xlogy_diff(p, log_p, log_q):
    # p * (log_p - log_q), defined as 0 where p == 0 (a class with no mass: masked, or underflowed).
    return tl.where(p == 0.0, 0.0, p * (log_p - log_q))


@triton.jit
def _log_softmax_block(row_ptr, cols, in_row, m, log_z, scale):
    # log softmax(x * scale) for one block of a row whose max m and log-sum log_z are known.
    x = tl.load(row_ptr + cols, mask=in_row, other=float("-inf")).to(tl.float32)
    return (x - m) * scale - log_z


@triton.jit
def _log_mixture(log_p, log_q, log_w_p, log_w_q):
    # log(w_p * p + w_q * q) from log-probabilities, stable when both are tiny or -inf.
    u = log_p + log_w_p
    v = log_q + log_w_q
    top = tl.maximum(u, v)
    top_safe = tl.where(top == float("-inf"), 0.0, top)
    return top_safe + tl.log(tl.exp(u - top_safe) + tl.exp(v - top_safe))


@triton.jit
def _softmax_kl_kernel(
    s_ptr,  # [N, V] student logits, last dim contiguous
    s_row_units,  # the row stride in units of S_ALIGN elements
    t_ptr,  # [N, V] teacher logits, last dim contiguous
    t_row_units,  # the row stride in units of T_ALIGN elements
    labels_ptr,  # [N] integer labels (read when HAS_LABELS)
    inv_count_ptr,  # [1] fp32: 1 / rows counted (batchmean) or 1
    loss_ptr,  # [N] fp32 per-row loss, output
    ds_ptr,  # [N, V] student gradient, output, contiguous (written when STUDENT_GRAD)
    dt_ptr,  # [N, V] teacher gradient, output, contiguous (written when TEACHER_GRAD)
    v_units,  # V in units of V_ALIGN elements
    inv_temperature,
    kd_scale,  # kd_weight * T^2 (or kd_weight)
    ce_weight,
    beta,
    log_beta,
    log_one_minus_beta,
    ignore_index,
    DIRECTION: tl.constexpr,  # 0 forward KL(t||s), 1 reverse KL(s||t), 2 JSD
    HAS_LABELS: tl.constexpr,
    HAS_CE: tl.constexpr,
    STUDENT_GRAD: tl.constexpr,
    TEACHER_GRAD: tl.constexpr,
    BLOCK_V: tl.constexpr,
    S_ALIGN: tl.constexpr,  # the largest powers of two up to 16 dividing the row strides and V: passed as
    T_ALIGN: tl.constexpr,  # counts of these units, strides and V are known multiples of them, so rows
    V_ALIGN: tl.constexpr,  # whose length is not a multiple of 16 (V = 1000) still get vector accesses
):
    row = tl.program_id(0).to(tl.int64)
    V = v_units * V_ALIGN
    s_row = s_ptr + row * (s_row_units * S_ALIGN)
    t_row = t_ptr + row * (t_row_units * T_ALIGN)
    offsets = tl.arange(0, BLOCK_V)

    # Row weight: 0 for ignored rows, NaN for a label outside [0, V) (never a silently wrong answer).
    row_weight = tl.load(inv_count_ptr)
    label = -1
    if HAS_LABELS:
        label = tl.load(labels_ptr + row).to(tl.int64)
        counted = label != ignore_index
        label_ok = (label >= 0) & (label < V)
        row_weight = tl.where(counted, row_weight, 0.0)
        row_weight = tl.where(counted & ~label_ok, float("nan"), row_weight)

    # Pass 1: online log-sum-exps of s/T and t/T (and of s at T = 1 for cross-entropy, sharing the max m_s),
    # plus the numerator of the forward or reverse KL, so the divergence is known before the gradient pass.
    # Everything is kept relative to the running maxima m_s, m_t of the raw logits:
    #   forward: kl_num = sum_j e_t,j * ((t_j - m_t) - (s_j - m_s)),  KL = kl_num / (T z_t) + log z_s - log z_t
    # and when a maximum moves, the old terms are rescaled and shifted by the move.
    m_s = float("-inf")
    z_s = 0.0
    m_t = float("-inf")
    z_t = 0.0
    z_1 = 0.0
    kl_num = 0.0
    for start in range(0, V, BLOCK_V):
        cols = start + offsets
        in_row = cols < V
        s_raw = tl.load(s_row + cols, mask=in_row, other=float("-inf")).to(tl.float32)
        t_raw = tl.load(t_row + cols, mask=in_row, other=float("-inf")).to(tl.float32)
        z_s_old = z_s
        z_t_old = z_t
        m_s_old = m_s
        m_t_old = m_t
        m_s, z_s, alpha_s, e_s, m_s_safe = _online_lse_step(m_s, z_s, s_raw, inv_temperature)
        m_t, z_t, alpha_t, e_t, m_t_safe = _online_lse_step(m_t, z_t, t_raw, inv_temperature)
        gap = (t_raw - m_t_safe) - (s_raw - m_s_safe)
        shift = _max_shift(m_s_old, m_s) - _max_shift(m_t_old, m_t)
        if DIRECTION == 0:
            kl_num = (kl_num + shift * z_t_old) * alpha_t + tl.sum(tl.where(e_t == 0.0, 0.0, e_t * gap), axis=0)
        if DIRECTION == 1:
            kl_num = (kl_num - shift * z_s_old) * alpha_s - tl.sum(tl.where(e_s == 0.0, 0.0, e_s * gap), axis=0)
        if HAS_CE:
            _, z_1, _, _, _ = _online_lse_step(m_s_old, z_1, s_raw, 1.0)
    log_z_s = tl.log(z_s)
    log_z_t = tl.log(z_t)

    kl_t_mix = 0.0
    kl_s_mix = 0.0
    if DIRECTION == 0:
        divergence = kl_num * inv_temperature / z_t + log_z_s - log_z_t
    elif DIRECTION == 1:
        divergence = kl_num * inv_temperature / z_s + log_z_t - log_z_s
    else:
        # Pass 2 (JSD only): KL of each distribution to the mixture M = beta * p_t + (1 - beta) * p_s.
        for start in range(0, V, BLOCK_V):
            cols = start + offsets
            in_row = cols < V
            log_ps = _log_softmax_block(s_row, cols, in_row, m_s, log_z_s, inv_temperature)
            log_pt = _log_softmax_block(t_row, cols, in_row, m_t, log_z_t, inv_temperature)
            log_m = _log_mixture(log_pt, log_ps, log_beta, log_one_minus_beta)
            kl_t_mix += tl.sum(_xlogy_diff(tl.exp(log_pt), log_pt, log_m), axis=0)
            kl_s_mix += tl.sum(_xlogy_diff(tl.exp(log_ps), log_ps, log_m), axis=0)
        divergence = beta * kl_t_mix + (1.0 - beta) * kl_s_mix

    loss = kd_scale * divergence
    log_z_1 = tl.log(z_1)
    if HAS_CE:
        label_col = tl.minimum(tl.maximum(label, 0), V - 1)
        s_label = tl.load(s_row + label_col).to(tl.float32)
        loss += ce_weight * (log_z_1 - (s_label - m_s))
    tl.store(loss_ptr + row, tl.where(row_weight == 0.0, 0.0, loss + 0.0 * row_weight))

    # Last pass: gradients of the weighted row loss, d/ds = d/da / T, written in the inputs' dtypes.
    grad_scale = kd_scale * inv_temperature * row_weight
    n_grad_cols = V if STUDENT_GRAD or TEACHER_GRAD else 0
    for start in range(0, n_grad_cols, BLOCK_V):
        cols = start + offsets
        in_row = cols < V
        s_raw = tl.load(s_row + cols, mask=in_row, other=float("-inf")).to(tl.float32)
        log_ps = (s_raw - m_s) * inv_temperature - log_z_s
        log_pt = _log_softmax_block(t_row, cols, in_row, m_t, log_z_t, inv_temperature)
        p_s = tl.exp(log_ps)
        p_t = tl.exp(log_pt)
        if DIRECTION == 0:
            grad_a = p_s - p_t
            grad_b = _xlogy_diff(p_t, log_pt, log_ps) - p_t * divergence
        elif DIRECTION == 1:
            grad_a = _xlogy_diff(p_s, log_ps, log_pt) - p_s * divergence
            grad_b = p_t - p_s
        else:
            log_m = _log_mixture(log_pt, log_ps, log_beta, log_one_minus_beta)
            grad_a = (1.0 - beta) * (_xlogy_diff(p_s, log_ps, log_m) - p_s * kl_s_mix)
            grad_b = beta * (_xlogy_diff(p_t, log_pt, log_m) - p_t * kl_t_mix)
        grad_s = grad_a * grad_scale
        if HAS_CE:
            p_1 = tl.exp((s_raw - m_s) - log_z_1)
            grad_s += ce_weight * row_weight * (p_1 - tl.where(cols == label, 1.0, 0.0))
        if STUDENT_GRAD:
            grad_s = tl.where(row_weight == 0.0, 0.0, grad_s)
            tl.store(ds_ptr + row * V + cols, grad_s.to(ds_ptr.dtype.element_ty), mask=in_row)
        if TEACHER_GRAD:
            grad_t = tl.where(row_weight == 0.0, 0.0, grad_b * grad_scale)
            tl.store(dt_ptr + row * V + cols, grad_t.to(dt_ptr.dtype.element_ty), mask=in_row)


@triton.jit
def _scale_rows_kernel(
    grad_ptr,  # [N, V] gradient buffer, contiguous, scaled in place
    grad_output_ptr,  # [N] (stride g_stride) or scalar (stride 0) upstream gradient
    g_stride,
    v_units,  # V in units of V_ALIGN elements (see _softmax_kl_kernel)
    BLOCK: tl.constexpr,
    V_ALIGN: tl.constexpr,
):
    V = v_units * V_ALIGN
    row = tl.program_id(0).to(tl.int64)
    g = tl.load(grad_output_ptr + row * g_stride).to(tl.float32)
    # The common upstream gradient of 1 leaves the buffer untouched: no traffic, decided on the device.
    if g != 1.0:
        cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        in_row = cols < V
        ptr = grad_ptr + row * V + cols
        values = tl.load(ptr, mask=in_row).to(tl.float32)
        tl.store(ptr, (values * g).to(grad_ptr.dtype.element_ty), mask=in_row)


def _alignment(count: int) -> int:
    """The largest power of two up to 16 that divides `count` (16 for 0)."""
    return 16 if count % 16 == 0 else count & -count


def _launch_config(n_cols: int) -> tuple[int, int]:
    block = min(triton.next_power_of_2(n_cols), MAX_BLOCK_V)
    num_warps = 4 if block <= 1024 else 8
    return block, num_warps


@torch.library.custom_op("gankd::softmax_kl", mutates_args=())
def _softmax_kl_op(
    student: Tensor,
    teacher: Tensor,
    labels: Tensor | None,
    inv_count: Tensor,
    temperature: float,
    direction: str,
    beta: float,
    kd_scale: float,
    ce_weight: float,
    ignore_index: int,
    reduction: str,
    student_grad: bool,
    teacher_grad: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """Reduced fp32 loss and the gradients of that loss: student [N, V] and teacher [N, V], each [0] if unwanted."""
    n_rows, n_cols = student.shape
    loss_rows = torch.empty(n_rows, dtype=torch.float32, device=student.device)
    grad_s = student.new_empty((n_rows, n_cols) if student_grad else (0,))
    grad_t = teacher.new_empty((n_rows, n_cols) if teacher_grad else (0,))
    block, num_warps = _launch_config(n_cols)
    s_align, t_align, v_align = _alignment(student.stride(0)), _alignment(teacher.stride(0)), _alignment(n_cols)
    _softmax_kl_kernel[(n_rows,)](
        student, student.stride(0) // s_align, teacher, teacher.stride(0) // t_align,
        labels if labels is not None else loss_rows, inv_count, loss_rows, grad_s, grad_t,
        n_cols // v_align, 1.0 / temperature, kd_scale, ce_weight, beta, math.log(beta), math.log1p(-beta),
        ignore_index,
        DIRECTION=_DIRECTION_CODE[direction], HAS_LABELS=labels is not None, HAS_CE=ce_weight != 0.0,
        STUDENT_GRAD=student_grad, TEACHER_GRAD=teacher_grad, BLOCK_V=block, S_ALIGN=s_align, T_ALIGN=t_align,
        V_ALIGN=v_align, num_warps=num_warps, maxnreg=MAX_REGISTERS,
    )  # fmt: skip
    return _reduce_rows(loss_rows, inv_count, reduction), grad_s, grad_t


@_softmax_kl_op.register_fake
def _softmax_kl_fake(student, teacher, labels, inv_count, temperature, direction, beta, kd_scale, ce_weight,
                     ignore_index, reduction, student_grad, teacher_grad):  # fmt: skip
    n_rows, n_cols = student.shape
    loss = student.new_empty(n_rows if reduction == "none" else (), dtype=torch.float32)
    grad_s = student.new_empty((n_rows, n_cols) if student_grad else (0,))
    grad_t = teacher.new_empty((n_rows, n_cols) if teacher_grad else (0,))
    return loss, grad_s, grad_t


@torch.library.custom_op("gankd::scale_rows_", mutates_args=("grad",))
def _scale_rows_(grad: Tensor, grad_output: Tensor) -> None:
    """grad[i, :] *= grad_output[i] (or the scalar grad_output), skipped on the device where it is 1."""
    n_rows, n_cols = grad.shape
    g_stride = 0 if grad_output.dim() == 0 else grad_output.stride(0)
    block = min(triton.next_power_of_2(n_cols), SCALE_BLOCK)
    v_align = _alignment(n_cols)
    _scale_rows_kernel[(n_rows, triton.cdiv(n_cols, block))](grad, grad_output, g_stride, n_cols // v_align,
                                                              BLOCK=block, V_ALIGN=v_align)  # fmt: skip


@_scale_rows_.register_fake
def _scale_rows_fake(grad, grad_output):
    return None


def _setup_context(ctx, inputs, output):
    _, grad_s, grad_t = output
    ctx.student_grad, ctx.teacher_grad = inputs[-2:]
    ctx.mark_non_differentiable(grad_s, grad_t)
    ctx.save_for_backward(grad_s, grad_t)


def _backward(ctx, grad_loss, _unused_grad_s, _unused_grad_t):
    # Saved buffers are rescaled in place; a second backward through the same graph then fails
    # autograd's version check loudly instead of returning a gradient scaled twice.
    grad_s, grad_t = ctx.saved_tensors
    grad_loss = grad_loss.reshape(-1) if grad_loss.dim() > 0 else grad_loss
    if ctx.student_grad:
        _scale_rows_(grad_s, grad_loss)
    if ctx.teacher_grad:
        _scale_rows_(grad_t, grad_loss)
    return (grad_s if ctx.student_grad else None, grad_t if ctx.teacher_grad else None) + (None,) * 11


_softmax_kl_op.register_autograd(_backward, setup_context=_setup_context)


def _reduce_rows(loss_rows: Tensor, inv_count: Tensor, reduction: str) -> Tensor:
    if reduction == "none":
        return loss_rows
    total = loss_rows.sum()
    return total * inv_count[0] if reduction == "batchmean" else total


def _log_softmax_scaled(logits: Tensor, temperature: float) -> Tensor:
    # log_softmax(x / T) with the row max taken off before dividing, so 1e4-sized logits lose no digits.
    row_max = logits.detach().amax(dim=-1, keepdim=True)
    row_max = torch.where(torch.isfinite(row_max), row_max, 0.0)
    return torch.log_softmax((logits - row_max) / temperature, dim=-1)


def _kl_rows(log_p: Tensor, log_q: Tensor) -> Tensor:
    # sum_j p_j (log p_j - log q_j), 0 where p_j == 0; the inner where keeps the gradient NaN-free there.
    p = log_p.exp()
    gap = torch.where(p == 0, 0.0, log_p - log_q)
    return (p * gap).sum(-1)


def _log_mixture_ref(log_a: Tensor, log_b: Tensor) -> Tensor:
    # logaddexp(log_a, log_b), -inf where both are: torch.logaddexp(-inf, -inf) has a NaN gradient even where
    # the incoming one is 0, so such classes (p_t = p_s = 0) go around it.
    both_zero = torch.isneginf(log_a) & torch.isneginf(log_b)
    mixed = torch.logaddexp(torch.where(both_zero, 0.0, log_a), torch.where(both_zero, 0.0, log_b))
    return torch.where(both_zero, float("-inf"), mixed)


def softmax_kl_ref(
    student_logits: Tensor,
    teacher_logits: Tensor,
    temperature: float = 1.0,
    *,
    direction: str = "forward",
    beta: float = 0.5,
    t2_scale: bool = True,
    labels: Tensor | None = None,
    kd_weight: float = 1.0,
    ce_weight: float = 0.0,
    ignore_index: int = -100,
    reduction: str = "batchmean",
) -> Tensor:
    """Pure-PyTorch specification of `softmax_kl` (fp32 or wider accumulation); same arguments, no `impl`."""
    check_softmax_kl_options(temperature, direction=direction, beta=beta, kd_weight=kd_weight,
                             ce_weight=ce_weight, ignore_index=ignore_index, reduction=reduction)  # fmt: skip
    check_inputs(student_logits, teacher_logits, labels, ce_weight)
    n_classes = student_logits.shape[-1]
    if labels is not None:
        check_label_values(labels, n_classes, ignore_index)
    compute_dtype = torch.promote_types(torch.promote_types(student_logits.dtype, teacher_logits.dtype), torch.float32)
    student = student_logits.to(compute_dtype)
    teacher = teacher_logits.to(compute_dtype)
    counted = None
    if labels is not None:
        # Ignored rows are zeroed first so that whatever they hold (even NaN) cannot reach a gradient.
        counted = labels != ignore_index
        student = torch.where(counted.unsqueeze(-1), student, 0.0)
        teacher = torch.where(counted.unsqueeze(-1), teacher, 0.0)

    log_ps = _log_softmax_scaled(student, temperature)
    log_pt = _log_softmax_scaled(teacher, temperature)
    if direction == "forward":
        divergence = _kl_rows(log_pt, log_ps)
    elif direction == "reverse":
        divergence = _kl_rows(log_ps, log_pt)
    else:
        log_m = _log_mixture_ref(log_pt + math.log(beta), log_ps + math.log1p(-beta))
        divergence = beta * _kl_rows(log_pt, log_m) + (1.0 - beta) * _kl_rows(log_ps, log_m)
    loss = kd_weight * (temperature**2 if t2_scale else 1.0) * divergence

    n_counted = loss.numel()
    if labels is not None:
        in_range = (labels >= 0) & (labels < n_classes)
        if ce_weight != 0.0:
            safe_labels = labels.clamp(0, n_classes - 1).unsqueeze(-1)
            label_logit = student.gather(-1, safe_labels).squeeze(-1)
            loss = loss + ce_weight * (torch.logsumexp(student, dim=-1) - label_logit)
        loss = torch.where(counted, loss, 0.0)
        loss = torch.where(counted & ~in_range, float("nan"), loss)
        n_counted = counted.sum().clamp(min=1)
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    return loss.sum() / n_counted if loss.numel() else loss.sum()


def softmax_kl(
    student_logits: Tensor,
    teacher_logits: Tensor,
    temperature: float = 1.0,
    *,
    direction: str = "forward",
    beta: float = 0.5,
    t2_scale: bool = True,
    labels: Tensor | None = None,
    kd_weight: float = 1.0,
    ce_weight: float = 0.0,
    ignore_index: int = -100,
    reduction: str = "batchmean",
    impl: str = "auto",
) -> Tensor:
    """Temperature-scaled softmax divergence between student and teacher logits, fused with cross-entropy.

    With T = temperature, p_s = softmax(s / T) and p_t = softmax(t / T) over the last dim, each row's loss is

        kd_weight * (T^2 if t2_scale) * D(p_s, p_t) + ce_weight * CE(softmax(s), label)

    where D is KL(p_t || p_s) for direction="forward" (Hinton), KL(p_s || p_t) for "reverse", and for
    "jsd" beta * KL(p_t || M) + (1 - beta) * KL(p_s || M) with M = beta * p_t + (1 - beta) * p_s.
    Cross-entropy is at temperature 1. Rows whose label equals `ignore_index` contribute 0 and are not
    counted; labels may be passed with ce_weight=0 only to mask rows.

    Args:
        student_logits: [..., V] float16, bfloat16 or float32 logits (float64 on the reference path), classes last.
        teacher_logits: [..., V], same shape and device; its dtype may differ. Gets a gradient when it
            requires grad (online distillation).
        temperature: T > 0, a finite Python number.
        direction: "forward", "reverse" or "jsd".
        beta: mixture weight of the teacher for "jsd", in (0, 1).
        t2_scale: multiply the divergence by T^2 so gradient magnitudes do not shrink with T.
        labels: [...] integer class indices in [0, V) or `ignore_index`. On CPU bad values raise; on a GPU
            (where checking would cost a host sync) a row with an out-of-range label gets a NaN loss.
        kd_weight, ce_weight: weights of the divergence and of the cross-entropy (needs labels).
        reduction: "batchmean" (sum over counted rows / their number; 0 when none is counted), "sum", or
            "none" (per-row losses shaped like the leading dims). kl_div's "mean" (/ N·V) is not offered.
        impl: "auto" (Triton for CUDA tensors when available, else the reference), "triton", "reference".

    Returns:
        float32 loss (float64 for float64 logits, which always take the reference path): a scalar, or
        [...] for reduction="none".

    Classes that are -inf in both student and teacher do not exist for that row: finite loss, zero
    gradient. NaN logits give a NaN loss. On the Triton path the gradient is computed in the forward
    launch; calling backward twice through the same graph raises (use impl="reference" for that, or for
    double backward).
    """
    check_softmax_kl_options(temperature, direction=direction, beta=beta, kd_weight=kd_weight,
                             ce_weight=ce_weight, ignore_index=ignore_index, reduction=reduction)  # fmt: skip
    check_inputs(student_logits, teacher_logits, labels, ce_weight)
    options = dict(direction=direction, beta=beta, t2_scale=t2_scale, labels=labels, kd_weight=kd_weight,
                   ce_weight=ce_weight, ignore_index=ignore_index, reduction=reduction)  # fmt: skip
    float64 = torch.float64 in (student_logits.dtype, teacher_logits.dtype)
    if impl == "triton" and float64:
        raise TypeError("softmax_kl(impl='triton') computes in float32; float64 logits run with impl='reference'")
    if not use_triton(impl, "softmax_kl", student_logits.device) or float64 or student_logits.numel() == 0:
        return softmax_kl_ref(student_logits, teacher_logits, temperature, **options)

    n_classes = student_logits.shape[-1]
    leading_shape = student_logits.shape[:-1]
    student = _as_rows(student_logits, n_classes)
    teacher = _as_rows(teacher_logits, n_classes)
    flat_labels = None
    if labels is not None:
        check_label_values(labels, n_classes, ignore_index)
        flat_labels = labels.reshape(-1)
    # 1 / (rows counted) stays on the device: counting labels there needs no host sync.
    if reduction == "batchmean" and labels is not None:
        inv_count = (flat_labels != ignore_index).sum().to(torch.float32).clamp(min=1).reciprocal().reshape(1)
    else:
        n_rows = student.shape[0] if reduction == "batchmean" else 1
        inv_count = torch.full((1,), 1.0 / n_rows, dtype=torch.float32, device=student.device)
    kd_scale = kd_weight * (temperature**2 if t2_scale else 1.0)
    student_grad = student_logits.requires_grad and torch.is_grad_enabled()
    teacher_grad = teacher_logits.requires_grad and torch.is_grad_enabled()
    loss, _, _ = torch.ops.gankd.softmax_kl(
        student, teacher, flat_labels, inv_count, float(temperature), direction, float(beta), float(kd_scale),
        float(ce_weight), ignore_index, reduction, student_grad, teacher_grad,
    )  # fmt: skip
    return loss.reshape(leading_shape) if reduction == "none" else loss


def _as_rows(logits: Tensor, n_classes: int) -> Tensor:
    # [..., V] -> [N, V] with a contiguous last dim; a view whenever the layout allows one.
    rows = logits.reshape(-1, n_classes)
    return rows if rows.stride(-1) == 1 else rows.contiguous()
