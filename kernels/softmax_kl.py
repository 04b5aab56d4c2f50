"""Temperature-scaled softmax-KL distillation loss: launchers, custom op, reference and dispatcher.

The forward computes each row's loss, weighted (batchmean's 1 / rows counted), and writes the student gradient
(and the teacher's, when it requires grad) for upstream gradient 1: one launch with a program per row, or, when
the rows are too few to fill the GPU, the split-row kernels (several programs per row; see
_softmax_kl_kernels.py); then one sum, unless the reduction is "none". Backward only rescales
that buffer in place when the upstream gradient differs from 1, and reads the upstream value on the device
to decide, so there is no host sync. fp16 gradients are computed in the backward instead, by the same launch
with the upstream gradient (`_fuses_gradients`).
"""

import math

import torch
from torch import Tensor

from ._dispatch import (
    first_order_only,
    fused_gradients,
    no_gradients,
    only_the_loss_is_differentiable,
    rounds_to_fp16,
    runs_triton,
    saveable,
    triton,
)
from ._softmax_kl_args import check_inputs, check_label_values, check_softmax_kl_options
from ._softmax_kl_kernels import (
    STATS,
    _scale_rows_kernel,
    _softmax_kl_kernel,
    _split_loss_grad_kernel,
    _split_mixture_kernel,
    _split_stats_kernel,
)

_DIRECTION_CODE = {"forward": 0, "reverse": 1, "jsd": 2}

# Widest block a row is streamed in; rows wider than this take several blocks per pass.
MAX_BLOCK_V = 4096
# A register cap for ptxas: without it, sm_80 builds of the forward-only variants with CE (BLOCK_V 4096,
# 8 warps) stopped at 64 registers and spilled 8 bytes; with it no variant spills and none needs more than
# 128 (benchmarks/results/compile_report.csv; python -m benchmarks.compile_gate --ops softmax_kl).
MAX_REGISTERS = 128
SCALE_BLOCK = 1024
# Split rows (_row_splits): enough programs for PROGRAMS_PER_SM on every SM, slices of MIN_SPLIT_BLOCKS blocks
# or more (each program also re-reads its row's partials: at most MAX_SPLITS of them).
PROGRAMS_PER_SM = 2
MIN_SPLIT_BLOCKS = 2
MAX_SPLITS = 64  # a power of two: the kernels merge a row's partials in one block of this size
DEFAULT_SM_COUNT = 132  # an H100 SXM's, where no CUDA device says (the interpreter, the compile gate)
# Passes after a row's first stream it the other way: the blocks the previous pass read last are read first,
# while L2 still holds them (_softmax_kl_kernels._block_start). Not yet measured on a GPU: the device run's
# tune step times both (benchmarks/tune_softmax_kl.py).
ALTERNATE_PASSES = True


def _alignment(count: int) -> int:
    """The largest power of two up to 16 that divides `count` (16 for 0)."""
    return 16 if count % 16 == 0 else count & -count


def _launch_config(n_cols: int) -> tuple[int, int]:
    block = min(triton.next_power_of_2(n_cols), MAX_BLOCK_V)
    num_warps = 4 if block <= 1024 else 8
    return block, num_warps


def _sm_count(device: torch.device) -> int:
    """Streaming multiprocessors of `device` (a typical data-centre GPU's count where there is no CUDA device,
    as under the interpreter)."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return DEFAULT_SM_COUNT


def _row_splits(n_rows: int, n_cols: int, block: int, sm_count: int) -> tuple[int, int]:
    """(programs per row, blocks per program: each program's slice of the row). Rows are split only when
    there are too few to give every SM PROGRAMS_PER_SM programs, into slices of at least MIN_SPLIT_BLOCKS
    blocks, MAX_SPLITS at most."""
    blocks = triton.cdiv(n_cols, block)
    wanted = triton.cdiv(PROGRAMS_PER_SM * sm_count, n_rows)
    splits = min(wanted, blocks // MIN_SPLIT_BLOCKS, MAX_SPLITS)
    if n_rows >= PROGRAMS_PER_SM * sm_count or splits < 2:
        return 1, blocks
    chunk_blocks = triton.cdiv(blocks, splits)
    return triton.cdiv(blocks, chunk_blocks), chunk_blocks


def _fuses_gradients(student: Tensor, teacher: Tensor, student_grad: bool, teacher_grad: bool) -> bool:
    """Whether the forward writes the gradients for an upstream gradient of 1 (the backward rescales them in place):
    unless a wanted one is fp16. Small softmax differences (a confident student that agrees with its teacher, a
    low temperature, a batchmean over many rows) fall under fp16's normal range, even under its subnormals, before
    a GradScaler's upstream gradient could lift them; the backward then computes them from the upstream gradient,
    rounding upstream x slope once, as torch does, at the cost of reading the logits again."""
    return not rounds_to_fp16((student, student_grad), (teacher, teacher_grad))


def _gradient_buffers(student: Tensor, teacher: Tensor, student_grad: bool,
                      teacher_grad: bool) -> tuple[Tensor, Tensor]:  # fmt: skip
    # Like the logits [N, V] where wanted, else [0].
    n_rows, n_cols = student.shape
    return (student.new_empty((n_rows, n_cols) if student_grad else (0,)),
            teacher.new_empty((n_rows, n_cols) if teacher_grad else (0,)))  # fmt: skip


def _launch(student: Tensor, teacher: Tensor, labels: Tensor | None, counted: Tensor | None, rows_counted: int,
            temperature: float, direction: str, beta: float, kd_scale: float, ce_weight: float, ignore_index: int,
            student_grad: bool, teacher_grad: bool,
            upstream: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:  # fmt: skip
    """(fp32 row losses times the rows' weights, student gradient, teacher gradient; each [0] if unwanted) for the
    upstream gradient `upstream` ([N] or 0-d) of the weighted row losses, or for 1. A row's weight is 0 where its
    label is ignored, else 1 / rows counted: `counted` (a 0-d tensor: labelled rows counted on the device) or
    rows_counted."""
    n_rows, n_cols = student.shape
    loss_rows = torch.empty(n_rows, dtype=torch.float32, device=student.device)
    grad_s, grad_t = _gradient_buffers(student, teacher, student_grad, teacher_grad)
    block, num_warps = _launch_config(n_cols)
    s_align, t_align, v_align = _alignment(student.stride(0)), _alignment(teacher.stride(0)), _alignment(n_cols)
    rows = (student, student.stride(0) // s_align, teacher, teacher.stride(0) // t_align)
    layout = dict(BLOCK_V=block, S_ALIGN=s_align, T_ALIGN=t_align, V_ALIGN=v_align, num_warps=num_warps,
                  maxnreg=MAX_REGISTERS)  # fmt: skip
    later_passes = dict(ALTERNATE=ALTERNATE_PASSES)  # for the kernels with a pass after the first
    code = dict(DIRECTION=_DIRECTION_CODE[direction], HAS_CE=ce_weight != 0.0)
    row_options = code | dict(HAS_LABELS=labels is not None, COUNT_ON_DEVICE=counted is not None,
                              STUDENT_GRAD=student_grad, TEACHER_GRAD=teacher_grad,
                              HAS_UPSTREAM=upstream is not None)  # fmt: skip
    # Placeholders, never read, for the pointers a variant does not use.
    labels = labels if labels is not None else loss_rows
    counted = counted if counted is not None else loss_rows
    row_weights = (labels, counted, rows_counted, *_upstream_args(upstream, loss_rows))
    inv_t = 1.0 / temperature
    # beta is JSD's alone (other directions accept any number for it and never read these).
    log_beta, log_one_minus_beta = (math.log(beta), math.log1p(-beta)) if direction == "jsd" else (0.0, 0.0)
    splits, chunk_blocks = _row_splits(n_rows, n_cols, block, _sm_count(student.device))
    if splits == 1:
        _softmax_kl_kernel[(n_rows,)](
            *rows, *row_weights, loss_rows, grad_s, grad_t, n_cols // v_align, inv_t, kd_scale, ce_weight, beta,
            log_beta, log_one_minus_beta, ignore_index, **row_options, **layout, **later_passes,
        )  # fmt: skip
        return loss_rows, grad_s, grad_t
    stats = torch.empty((n_rows, splits, STATS), dtype=torch.float32, device=student.device)
    mixture = torch.empty((n_rows, splits, 2) if direction == "jsd" else (0,), dtype=torch.float32,
                          device=student.device)  # fmt: skip
    slices = (n_cols // v_align, chunk_blocks, splits)
    _split_stats_kernel[(n_rows, splits)](*rows, stats, *slices, inv_t, **code, **layout)
    if direction == "jsd":
        _split_mixture_kernel[(n_rows, splits)](*rows, stats, mixture, *slices, inv_t, log_beta, log_one_minus_beta,
                                                MAX_SPLITS=MAX_SPLITS, **layout, **later_passes)  # fmt: skip
    # Without gradients only each row's program 0 has work: the loss.
    _split_loss_grad_kernel[(n_rows, splits if student_grad or teacher_grad else 1)](
        *rows, *row_weights, stats, mixture, loss_rows, grad_s, grad_t, *slices, inv_t, kd_scale, ce_weight,
        beta, log_beta, log_one_minus_beta, ignore_index, MAX_SPLITS=MAX_SPLITS, **row_options, **layout,
        **later_passes,
    )  # fmt: skip
    return loss_rows, grad_s, grad_t


def _upstream_args(upstream: Tensor | None, placeholder: Tensor) -> tuple[Tensor, int]:
    # (pointer, row stride) of the upstream gradient: 0-d or [N]; a placeholder never read where there is none.
    if upstream is None:
        return placeholder, 0
    return upstream, 0 if upstream.dim() == 0 else upstream.stride(0)


@torch.library.custom_op("gankd::softmax_kl", mutates_args=())
def _softmax_kl_op(
    student: Tensor,
    teacher: Tensor,
    labels: Tensor | None,
    counted: Tensor | None,
    rows_counted: int,
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
    """Reduced fp32 loss and the gradients of that loss for upstream 1 (student [N, V] and teacher [N, V]): each [0]
    if unwanted, and both [0] unless `_fuses_gradients`. The rows are weighted by 1 / `counted` or 1 / rows_counted
    (see `_launch`)."""
    fused = _fuses_gradients(student, teacher, student_grad, teacher_grad)
    loss_rows, grad_s, grad_t = _launch(student, teacher, labels, counted, rows_counted, temperature, direction,
                                        beta, kd_scale, ce_weight, ignore_index, student_grad and fused,
                                        teacher_grad and fused, None)  # fmt: skip
    return _reduce_rows(loss_rows, reduction), grad_s, grad_t


@_softmax_kl_op.register_fake
def _softmax_kl_fake(student, teacher, labels, counted, rows_counted, temperature, direction, beta, kd_scale,
                     ce_weight, ignore_index, reduction, student_grad, teacher_grad):  # fmt: skip
    fused = _fuses_gradients(student, teacher, student_grad, teacher_grad)
    loss = student.new_empty(student.shape[0] if reduction == "none" else (), dtype=torch.float32)
    return loss, *_gradient_buffers(student, teacher, student_grad and fused, teacher_grad and fused)


@torch.library.custom_op("gankd::softmax_kl_grad", mutates_args=())
def _softmax_kl_grad_op(
    student: Tensor, teacher: Tensor, labels: Tensor | None, counted: Tensor | None, rows_counted: int,
    upstream: Tensor, temperature: float, direction: str, beta: float, kd_scale: float, ce_weight: float,
    ignore_index: int, student_grad: bool, teacher_grad: bool,
) -> tuple[Tensor, Tensor]:  # fmt: skip
    """Gradients (student, teacher; [0] if unwanted) of sum(upstream * weighted row losses), upstream 0-d or [N]:
    the forward's launch again, its gradients multiplied by the upstream before rounding."""
    _, grad_s, grad_t = _launch(student, teacher, labels, counted, rows_counted, temperature, direction, beta,
                                kd_scale, ce_weight, ignore_index, student_grad, teacher_grad, upstream)  # fmt: skip
    return grad_s, grad_t


@_softmax_kl_grad_op.register_fake
def _softmax_kl_grad_fake(student, teacher, labels, counted, rows_counted, upstream, temperature, direction, beta,
                          kd_scale, ce_weight, ignore_index, student_grad, teacher_grad):  # fmt: skip
    return _gradient_buffers(student, teacher, student_grad, teacher_grad)


@torch.library.custom_op("gankd::scale_rows_", mutates_args=("grad",))
def _scale_rows_(grad: Tensor, grad_output: Tensor) -> None:
    """grad[i, :] *= grad_output[i] (or the scalar grad_output), skipped on the device where that is 1."""
    n_rows, n_cols = grad.shape
    g_stride = 0 if grad_output.dim() == 0 else grad_output.stride(0)
    block = min(triton.next_power_of_2(n_cols), SCALE_BLOCK)
    v_align = _alignment(n_cols)
    _scale_rows_kernel[(n_rows, triton.cdiv(n_cols, block))](
        grad, grad_output, g_stride, n_cols // v_align, BLOCK=block, V_ALIGN=v_align,
    )  # fmt: skip


@_scale_rows_.register_fake
def _scale_rows_fake(grad, grad_output):
    return None


def _setup_context(ctx, inputs, output):
    student, teacher, labels, counted, rows_counted = inputs[:5]
    ctx.rows_counted = rows_counted
    ctx.options = inputs[5:11]  # temperature, direction, beta, kd_scale, ce_weight, ignore_index
    ctx.student_grad, ctx.teacher_grad = inputs[-2:]
    ctx.fused = _fuses_gradients(student, teacher, ctx.student_grad, ctx.teacher_grad)
    _, grad_s, grad_t = output
    only_the_loss_is_differentiable(ctx, grad_s, grad_t)
    if ctx.fused:
        ctx.save_for_backward(grad_s, grad_t)
    else:  # the logits are read again (an inference-mode teacher is copied to be saved: `saveable`)
        ctx.save_for_backward(*saveable(student, teacher), labels, counted)


@first_order_only("softmax_kl")
def _backward(ctx, grad_loss, _unused_grad_s, _unused_grad_t):
    if grad_loss is None:
        return no_gradients(ctx)
    grad_loss = grad_loss.reshape(-1) if grad_loss.dim() > 0 else grad_loss
    if ctx.fused:
        grad_s, grad_t = fused_gradients(ctx, "softmax_kl")
        if ctx.student_grad:
            _scale_rows_(grad_s, grad_loss)
        if ctx.teacher_grad:
            _scale_rows_(grad_t, grad_loss)
    else:
        student, teacher, labels, counted = ctx.saved_tensors
        grad_s, grad_t = _softmax_kl_grad_op(student, teacher, labels, counted, ctx.rows_counted, grad_loss,
                                             *ctx.options, ctx.student_grad, ctx.teacher_grad)  # fmt: skip
    other_inputs = (None,) * (len(ctx.needs_input_grad) - 2)
    return (grad_s if ctx.student_grad else None, grad_t if ctx.teacher_grad else None) + other_inputs


_softmax_kl_op.register_autograd(_backward, setup_context=_setup_context)


def _reduce_rows(weighted_rows: Tensor, reduction: str) -> Tensor:
    # The rows' losses already carry their weights (batchmean's 1 / rows counted): one sum, or none.
    return weighted_rows if reduction == "none" else weighted_rows.sum()


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


def softmax_kl_ref(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 1.0, *,
                   direction: str = "forward", beta: float = 0.5, t2_scale: bool = True, labels: Tensor | None = None,
                   kd_weight: float = 1.0, ce_weight: float = 0.0, ignore_index: int = -100,
                   reduction: str = "batchmean") -> Tensor:  # fmt: skip
    """Pure-PyTorch specification of `softmax_kl` (fp32 or wider accumulation); same arguments, no `impl`."""
    ignore_index = check_softmax_kl_options(temperature, direction=direction, beta=beta, t2_scale=t2_scale,
                                            kd_weight=kd_weight, ce_weight=ce_weight, ignore_index=ignore_index,
                                            reduction=reduction)  # fmt: skip
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
            safe_labels = labels.long().clamp(0, n_classes - 1).unsqueeze(-1)  # gather takes int64 indices
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
        beta: mixture weight of the teacher for "jsd", in (0, 1); other directions ignore it.
        t2_scale: multiply the divergence by T^2 so gradient magnitudes do not shrink with T.
        labels: [...] class indices in [0, V) or `ignore_index`, any integer dtype. On CPU bad values raise; on a GPU
            (where checking would cost a host sync) a row with an out-of-range label gets a NaN loss.
        kd_weight, ce_weight: weights of the divergence and of the cross-entropy (needs labels).
        reduction: "batchmean" (sum over counted rows / their number; 0 when none is counted), "sum", or
            "none" (per-row losses shaped like the leading dims). kl_div's "mean" (/ N·V) is not offered.
        impl: "auto" (Triton for CUDA tensors when available, else the reference), "triton", "reference".

    Returns:
        float32 loss (float64 for float64 logits, which always take the reference path): a scalar, or
        [...] for reduction="none".

    Classes that are -inf in both student and teacher do not exist for that row: finite loss, zero
    gradient (a row with no class left, or with NaN or +inf logits, gives a NaN loss; ignore such rows with
    labels). On the Triton path the gradient is computed in the forward launch; calling backward twice
    through the same graph raises, and so does a backward with create_graph=True (use impl="reference"
    for those).
    """
    ignore_index = check_softmax_kl_options(temperature, direction=direction, beta=beta, t2_scale=t2_scale,
                                            kd_weight=kd_weight, ce_weight=ce_weight, ignore_index=ignore_index,
                                            reduction=reduction)  # fmt: skip
    check_inputs(student_logits, teacher_logits, labels, ce_weight)
    options = dict(direction=direction, beta=beta, t2_scale=t2_scale, labels=labels, kd_weight=kd_weight,
                   ce_weight=ce_weight, ignore_index=ignore_index, reduction=reduction)  # fmt: skip
    if not runs_triton(impl, "softmax_kl", student_logits, teacher_logits):
        return softmax_kl_ref(student_logits, teacher_logits, temperature, **options)

    n_classes = student_logits.shape[-1]
    leading_shape = student_logits.shape[:-1]
    student = _as_rows(student_logits, n_classes)
    teacher = _as_rows(teacher_logits, n_classes)
    flat_labels = None
    if labels is not None:
        check_label_values(labels, n_classes, ignore_index)
        flat_labels = labels.reshape(-1).contiguous()  # the kernels read label i at labels + i
    # Batchmean's rows counted: the labelled ones, counted on the device (no host sync), else N. The kernels divide
    # by the count themselves.
    counted = (flat_labels != ignore_index).sum() if reduction == "batchmean" and labels is not None else None
    rows_counted = student.shape[0] if reduction == "batchmean" else 1
    kd_scale = kd_weight * (temperature**2 if t2_scale else 1.0)
    student_grad = student_logits.requires_grad and torch.is_grad_enabled()
    teacher_grad = teacher_logits.requires_grad and torch.is_grad_enabled()
    loss, *_ = torch.ops.gankd.softmax_kl(
        student, teacher, flat_labels, counted, rows_counted, float(temperature), direction, float(beta),
        float(kd_scale), float(ce_weight), ignore_index, reduction, student_grad, teacher_grad,
    )  # fmt: skip
    return loss.reshape(leading_shape) if reduction == "none" else loss


def _as_rows(logits: Tensor, n_classes: int) -> Tensor:
    # [..., V] -> [N, V] with a contiguous last dim; a view whenever the layout allows one.
    rows = logits.reshape(-1, n_classes)
    return rows if rows.stride(-1) == 1 else rows.contiguous()
