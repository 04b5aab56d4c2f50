"""Feature-map matching loss (mse, l1, smooth-l1, cosine): Triton kernels, custom op, reference and dispatcher.

With reduction "mean" or "sum" one launch reads student and teacher once, writes per-program partial
losses and the gradients for upstream gradient 1; backward only rescales them in place when the upstream
gradient differs from 1 (decided on the device). With reduction "none", and for fp16 gradients
(`_features.fuses_gradients`), the forward writes only the loss and the backward computes the gradients from
the upstream gradient. Cosine keeps three numbers per position (dot product and both norms) so its backward
is one pass.
"""

import torch
import torch.nn.functional as F
from torch import Tensor

from ._checks import check_choice
from ._dispatch import (
    IMPLS,
    first_order_only,
    fused_gradients,
    no_gradients,
    only_the_loss_is_differentiable,
    runs_triton,
    saveable,
    tl,
    triton,
)
from ._features import (
    REDUCTIONS,
    as_channels_positions,
    check_pair,
    dense,
    fuses_gradients,
    gradient_buffers,
    like_layout,
    mean_gradient_scale,
    nan_sign,
    reduce_reference,
    sample_positions,
    scale_wanted_,
    upstream_gradient,
)

KINDS = ("mse", "l1", "smooth_l1", "cosine")
_KIND_CODE = {"mse": 0, "l1": 1, "smooth_l1": 2}
COSINE_EPS = 1e-8  # as torch.nn.functional.cosine_similarity
# Launch configurations (benchmarks/tune_feature_match.py sweeps them on a GPU).
ELEMENTWISE_BLOCK = 4096
ELEMENTWISE_WARPS = 4
COSINE_BLOCK_C = 16
COSINE_BLOCK_P = 128
COSINE_WARPS = 4


@triton.jit
def _elementwise_match_kernel(
    s_ptr,  # [M] student, flat in memory order
    t_ptr,  # [M] teacher, same memory order
    g_ptr,  # [M] upstream gradient of the per-element loss (HAS_UPSTREAM), same order; or one value (g_stride 0)
    e_ptr,  # [M] fp32 per-element loss, output (WRITE_E)
    partial_ptr,  # [programs] fp32 partial sums times grad_scale, output (WRITE_PARTIAL): the loss is their sum
    ds_ptr,  # [M] student gradient, output (STUDENT_GRAD)
    dt_ptr,  # [M] teacher gradient, output (TEACHER_GRAD)
    M,
    grad_scale,  # 1/M for mean, 1 otherwise: the factor of the loss and of its gradients
    g_stride,  # 1, or 0 when one upstream gradient serves every element
    KIND: tl.constexpr,  # 0 mse, 1 l1, 2 smooth_l1 (beta 1)
    WRITE_E: tl.constexpr, WRITE_PARTIAL: tl.constexpr, HAS_UPSTREAM: tl.constexpr,
    STUDENT_GRAD: tl.constexpr, TEACHER_GRAD: tl.constexpr,
    BLOCK: tl.constexpr,
):  # fmt: skip
    offsets = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    in_range = offsets < M
    diff = tl.load(s_ptr + offsets, mask=in_range).to(tl.float32) - tl.load(t_ptr + offsets, mask=in_range).to(
        tl.float32
    )
    sign = nan_sign(diff)
    if KIND == 0:
        loss = diff * diff
        slope = 2.0 * diff
    elif KIND == 1:
        loss = tl.abs(diff)
        slope = sign
    else:
        quadratic = tl.abs(diff) < 1.0
        loss = tl.where(quadratic, 0.5 * diff * diff, tl.abs(diff) - 0.5)
        slope = tl.where(quadratic, diff, sign)
    if WRITE_E:
        tl.store(e_ptr + offsets, loss, mask=in_range)
    if WRITE_PARTIAL:
        tl.store(partial_ptr + tl.program_id(0), tl.sum(tl.where(in_range, loss, 0.0), axis=0) * grad_scale)
    grad = slope * grad_scale
    if HAS_UPSTREAM:
        grad = grad * tl.load(g_ptr + offsets * g_stride, mask=in_range).to(tl.float32)
    if STUDENT_GRAD:
        tl.store(ds_ptr + offsets, grad.to(ds_ptr.dtype.element_ty), mask=in_range)
    if TEACHER_GRAD:
        tl.store(dt_ptr + offsets, (-grad).to(dt_ptr.dtype.element_ty), mask=in_range)


@triton.jit
def _cosine_match_kernel(
    s_ptr, s_sn, s_sc, s_sp,  # [N, C, P] student and its strides; its gradient ds_ptr has the same strides
    t_ptr, t_sn, t_sc, t_sp,  # [N, C, P] teacher and its strides; its gradient dt_ptr has the same strides
    stats_ptr,  # [3, N, P] fp32: dot(s, t), |s|, |t| per position; written when not STATS_IN, else read
    g_ptr, g_sn, g_sp,  # [N, P] upstream gradient of the per-position loss and its strides (HAS_UPSTREAM)
    e_ptr,  # [N, P] fp32 per-position loss 1 - cos, output (WRITE_E)
    partial_ptr,  # [programs] fp32 partial sums times grad_scale, output (WRITE_PARTIAL): the loss is their sum
    ds_ptr, dt_ptr,  # student and teacher gradients, outputs (STUDENT_GRAD, TEACHER_GRAD)
    N, C, P, grad_scale, eps,
    STATS_IN: tl.constexpr, WRITE_E: tl.constexpr, WRITE_PARTIAL: tl.constexpr, HAS_UPSTREAM: tl.constexpr,
    STUDENT_GRAD: tl.constexpr, TEACHER_GRAD: tl.constexpr,
    BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
):  # fmt: skip
    # One program per (sample, block of positions), flattened on grid axis 0 (axis 1 stops at 65535).
    n, positions, in_p = sample_positions(P, BLOCK_P)
    channels = tl.arange(0, BLOCK_C)
    s_base = s_ptr + n * s_sn + positions[None, :] * s_sp
    t_base = t_ptr + n * t_sn + positions[None, :] * t_sp
    stat_offsets = n * P + positions
    # The |s| and |t| planes start N*P and 2*N*P elements in: int64 products (N*P passes 2**31 at large maps).
    plane = tl.cast(N, tl.int64) * P
    if STATS_IN:
        dot = tl.load(stats_ptr + stat_offsets, mask=in_p, other=0.0)
        norm_s = tl.load(stats_ptr + plane + stat_offsets, mask=in_p, other=0.0)
        norm_t = tl.load(stats_ptr + 2 * plane + stat_offsets, mask=in_p, other=0.0)
    else:
        # Pass 1 over the channels: dot product and squared norms per position.
        dot = tl.zeros([BLOCK_P], dtype=tl.float32)
        sq_s = tl.zeros([BLOCK_P], dtype=tl.float32)
        sq_t = tl.zeros([BLOCK_P], dtype=tl.float32)
        for c0 in range(0, C, BLOCK_C):
            c = (c0 + channels)[:, None].to(tl.int64)
            tile = (c < C) & in_p[None, :]
            s = tl.load(s_base + c * s_sc, mask=tile, other=0.0).to(tl.float32)
            t = tl.load(t_base + c * t_sc, mask=tile, other=0.0).to(tl.float32)
            dot += tl.sum(s * t, axis=0)
            sq_s += tl.sum(s * s, axis=0)
            sq_t += tl.sum(t * t, axis=0)
        norm_s = tl.sqrt(sq_s)
        norm_t = tl.sqrt(sq_t)
        tl.store(stats_ptr + stat_offsets, dot, mask=in_p)
        tl.store(stats_ptr + plane + stat_offsets, norm_s, mask=in_p)
        tl.store(stats_ptr + 2 * plane + stat_offsets, norm_t, mask=in_p)
    # cos = s.t / (max(|s|, eps) * max(|t|, eps)), as torch's cosine_similarity.
    clamped_s = tl.maximum(norm_s, eps)
    clamped_t = tl.maximum(norm_t, eps)
    cos = dot / (clamped_s * clamped_t)
    if WRITE_E:
        tl.store(e_ptr + stat_offsets, 1.0 - cos, mask=in_p)
    if WRITE_PARTIAL:
        tl.store(partial_ptr + tl.program_id(0), tl.sum(tl.where(in_p, 1.0 - cos, 0.0), axis=0) * grad_scale)
    if STUDENT_GRAD or TEACHER_GRAD:
        # d(1 - cos)/ds = cos * s / |s|^2 - t / (|s| |t|); a norm under eps is a constant (as in torch).
        grad = tl.zeros([BLOCK_P], dtype=tl.float32) + grad_scale
        if HAS_UPSTREAM:
            grad = grad * tl.load(g_ptr + n * g_sn + positions * g_sp, mask=in_p, other=0.0).to(tl.float32)
        cross = grad / (clamped_s * clamped_t)
        self_s = tl.where(norm_s > eps, grad * cos / (norm_s * clamped_s), 0.0)
        self_t = tl.where(norm_t > eps, grad * cos / (norm_t * clamped_t), 0.0)
        # Right after this program's statistics pass the channels go last to first: the blocks it read last are
        # read first again, while L2 still holds them.
        channel_blocks = tl.cdiv(C, BLOCK_C)
        for step in range(0, channel_blocks):
            c0 = step * BLOCK_C if STATS_IN else (channel_blocks - 1 - step) * BLOCK_C
            c = (c0 + channels)[:, None].to(tl.int64)
            tile = (c < C) & in_p[None, :]
            s = tl.load(s_base + c * s_sc, mask=tile, other=0.0).to(tl.float32)
            t = tl.load(t_base + c * t_sc, mask=tile, other=0.0).to(tl.float32)
            if STUDENT_GRAD:
                ds = self_s[None, :] * s - cross[None, :] * t
                tl.store(ds_ptr + n * s_sn + positions[None, :] * s_sp + c * s_sc, ds.to(ds_ptr.dtype.element_ty),
                         mask=tile)  # fmt: skip
            if TEACHER_GRAD:
                dt = self_t[None, :] * t - cross[None, :] * s
                tl.store(dt_ptr + n * t_sn + positions[None, :] * t_sp + c * t_sc, dt.to(dt_ptr.dtype.element_ty),
                         mask=tile)  # fmt: skip


def _fused(reduction: str, student: Tensor, teacher: Tensor, student_grad: bool, teacher_grad: bool) -> bool:
    return fuses_gradients(reduction, (student, student_grad), (teacher, teacher_grad))


def _grid_elementwise(n_elements: int) -> tuple[int]:
    return (triton.cdiv(n_elements, ELEMENTWISE_BLOCK),)


def _grid_cosine(channels_positions: Tensor) -> tuple[int]:
    n_samples, _, n_positions = channels_positions.shape
    return (triton.cdiv(n_positions, COSINE_BLOCK_P) * n_samples,)


@torch.library.custom_op("gankd::feature_match_elementwise", mutates_args=())
def _elementwise_op(
    student: Tensor, teacher: Tensor, kind: str, reduction: str, student_grad: bool, teacher_grad: bool
) -> tuple[Tensor, Tensor, Tensor]:
    """student and teacher dense with equal strides. Returns (loss, ds, dt): ds and dt for upstream 1 when
    `fuses_gradients`, else [0]; the loss per element (shaped and laid out like student) for "none"."""
    n_elements = student.numel()
    grid = _grid_elementwise(n_elements)
    per_element = reduction == "none"
    e = torch.empty_like(student, dtype=torch.float32) if per_element else student.new_empty(0, dtype=torch.float32)
    partials = student.new_empty(0 if per_element else grid[0], dtype=torch.float32)
    grad_s, grad_t = gradient_buffers(student, teacher, student_grad, teacher_grad,
                                      _fused(reduction, student, teacher, student_grad, teacher_grad))  # fmt: skip
    _elementwise_match_kernel[grid](
        student, teacher, student, e, partials, grad_s, grad_t, n_elements, mean_gradient_scale(reduction, n_elements),
        1, KIND=_KIND_CODE[kind], WRITE_E=per_element, WRITE_PARTIAL=not per_element, HAS_UPSTREAM=False,
        STUDENT_GRAD=grad_s.numel() > 0, TEACHER_GRAD=grad_t.numel() > 0, BLOCK=ELEMENTWISE_BLOCK,
        num_warps=ELEMENTWISE_WARPS,
    )  # fmt: skip
    return (e if per_element else partials.sum()), grad_s, grad_t


@_elementwise_op.register_fake
def _elementwise_fake(student, teacher, kind, reduction, student_grad, teacher_grad):
    per_element = reduction == "none"
    loss = torch.empty_like(student, dtype=torch.float32) if per_element else student.new_empty((), dtype=torch.float32)
    return loss, *gradient_buffers(student, teacher, student_grad, teacher_grad,
                                   _fused(reduction, student, teacher, student_grad, teacher_grad))  # fmt: skip


@torch.library.custom_op("gankd::feature_match_elementwise_grad", mutates_args=())
def _elementwise_grad_op(
    student: Tensor, teacher: Tensor, grad_e: Tensor, kind: str, student_grad: bool, teacher_grad: bool
) -> tuple[Tensor, Tensor]:
    """Gradients of sum(grad_e * e): grad_e has student's strides, or is 0-d (one value for every element)."""
    grad_s, grad_t = gradient_buffers(student, teacher, student_grad, teacher_grad)
    n_elements = student.numel()
    _elementwise_match_kernel[_grid_elementwise(n_elements)](
        student, teacher, grad_e, grad_e, grad_e, grad_s, grad_t, n_elements, 1.0, 0 if grad_e.dim() == 0 else 1,
        KIND=_KIND_CODE[kind], WRITE_E=False, WRITE_PARTIAL=False, HAS_UPSTREAM=True, STUDENT_GRAD=student_grad,
        TEACHER_GRAD=teacher_grad, BLOCK=ELEMENTWISE_BLOCK, num_warps=ELEMENTWISE_WARPS,
    )  # fmt: skip
    return grad_s, grad_t


@torch.library.custom_op("gankd::feature_match_cosine", mutates_args=())
def _cosine_op(
    student: Tensor, teacher: Tensor, reduction: str, student_grad: bool, teacher_grad: bool
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """student, teacher [N, C, P] dense. Returns (loss or per-position [N, P], ds, dt, stats [3, N, P]), ds and dt
    for upstream 1 when `fuses_gradients`, else [0]."""
    n_samples, n_channels, n_positions = student.shape
    grid = _grid_cosine(student)
    per_position = reduction == "none"
    stats = student.new_empty((3, n_samples, n_positions), dtype=torch.float32)
    e = student.new_empty((n_samples, n_positions) if per_position else 0, dtype=torch.float32)
    partials = student.new_empty(0 if per_position else grid[0], dtype=torch.float32)
    grad_s, grad_t = gradient_buffers(student, teacher, student_grad, teacher_grad,
                                      _fused(reduction, student, teacher, student_grad, teacher_grad))  # fmt: skip
    count = n_samples * n_positions
    _cosine_match_kernel[grid](
        student, *student.stride(), teacher, *teacher.stride(), stats, stats, 0, 0, e, partials, grad_s, grad_t,
        n_samples, n_channels, n_positions, mean_gradient_scale(reduction, count), COSINE_EPS, STATS_IN=False,
        WRITE_E=per_position, WRITE_PARTIAL=not per_position, HAS_UPSTREAM=False, STUDENT_GRAD=grad_s.numel() > 0,
        TEACHER_GRAD=grad_t.numel() > 0, BLOCK_C=COSINE_BLOCK_C, BLOCK_P=COSINE_BLOCK_P, num_warps=COSINE_WARPS,
    )  # fmt: skip
    return (e if per_position else partials.sum()), grad_s, grad_t, stats


@_cosine_op.register_fake
def _cosine_fake(student, teacher, reduction, student_grad, teacher_grad):
    n_samples, _, n_positions = student.shape
    per_position = reduction == "none"
    loss = student.new_empty((n_samples, n_positions) if per_position else (), dtype=torch.float32)
    grads = gradient_buffers(student, teacher, student_grad, teacher_grad,
                             _fused(reduction, student, teacher, student_grad, teacher_grad))  # fmt: skip
    return loss, *grads, student.new_empty((3, n_samples, n_positions), dtype=torch.float32)


@torch.library.custom_op("gankd::feature_match_cosine_grad", mutates_args=())
def _cosine_grad_op(
    student: Tensor, teacher: Tensor, stats: Tensor, grad_e: Tensor, student_grad: bool, teacher_grad: bool
) -> tuple[Tensor, Tensor]:
    """Gradients of sum(grad_e * (1 - cos)) from the saved per-position stats; grad_e [N, P] is read through its
    own strides (an expanded upstream gradient is not copied)."""
    grad_s, grad_t = gradient_buffers(student, teacher, student_grad, teacher_grad)
    n_samples, n_channels, n_positions = student.shape
    _cosine_match_kernel[_grid_cosine(student)](
        student, *student.stride(), teacher, *teacher.stride(), stats, grad_e, *grad_e.stride(), grad_e, grad_e,
        grad_s, grad_t, n_samples, n_channels, n_positions, 1.0, COSINE_EPS, STATS_IN=True, WRITE_E=False,
        WRITE_PARTIAL=False, HAS_UPSTREAM=True, STUDENT_GRAD=student_grad, TEACHER_GRAD=teacher_grad,
        BLOCK_C=COSINE_BLOCK_C, BLOCK_P=COSINE_BLOCK_P, num_warps=COSINE_WARPS,
    )  # fmt: skip
    return grad_s, grad_t


def _gradients_fake(student, teacher, *inputs_and_flags):
    # The fake of both gradient ops: their last two arguments say which of the two gradients they return.
    return gradient_buffers(student, teacher, *inputs_and_flags[-2:])


_elementwise_grad_op.register_fake(_gradients_fake)
_cosine_grad_op.register_fake(_gradients_fake)


def _setup_elementwise(ctx, inputs, output):
    student, teacher, ctx.kind, ctx.reduction, ctx.student_grad, ctx.teacher_grad = inputs
    ctx.fused = _fused(ctx.reduction, student, teacher, ctx.student_grad, ctx.teacher_grad)
    _, grad_s, grad_t = output
    only_the_loss_is_differentiable(ctx, grad_s, grad_t)
    ctx.save_for_backward(*((grad_s, grad_t) if ctx.fused else saveable(student, teacher)))


@first_order_only("feature_match")
def _backward_elementwise(ctx, grad_loss, _unused_grad_s, _unused_grad_t):
    if grad_loss is None:
        return no_gradients(ctx)
    if ctx.fused:
        grad_s, grad_t = fused_gradients(ctx, "feature_match")
        scale_wanted_((grad_s, grad_t), (ctx.student_grad, ctx.teacher_grad), grad_loss)
    else:
        student, teacher = ctx.saved_tensors
        upstream = upstream_gradient(grad_loss, ctx.reduction, student.numel())
        upstream = upstream if upstream.dim() == 0 else like_layout(upstream, student)
        grad_s, grad_t = _elementwise_grad_op(student, teacher, upstream, ctx.kind, ctx.student_grad,
                                              ctx.teacher_grad)  # fmt: skip
    return (grad_s if ctx.student_grad else None, grad_t if ctx.teacher_grad else None, None, None, None, None)


def _setup_cosine(ctx, inputs, output):
    student, teacher, ctx.reduction, ctx.student_grad, ctx.teacher_grad = inputs
    ctx.fused = _fused(ctx.reduction, student, teacher, ctx.student_grad, ctx.teacher_grad)
    _, grad_s, grad_t, stats = output
    only_the_loss_is_differentiable(ctx, grad_s, grad_t, stats)
    ctx.save_for_backward(*((grad_s, grad_t) if ctx.fused else (*saveable(student, teacher), stats)))


@first_order_only("feature_match")
def _backward_cosine(ctx, grad_loss, _unused_grad_s, _unused_grad_t, _unused_stats):
    if grad_loss is None:
        return no_gradients(ctx)
    if ctx.fused:
        grad_s, grad_t = fused_gradients(ctx, "feature_match")
        scale_wanted_((grad_s, grad_t), (ctx.student_grad, ctx.teacher_grad), grad_loss)
    else:
        student, teacher, stats = ctx.saved_tensors
        n_samples, _, n_positions = student.shape
        upstream = upstream_gradient(grad_loss, ctx.reduction, n_samples * n_positions).expand(n_samples, n_positions)
        grad_s, grad_t = _cosine_grad_op(student, teacher, stats, upstream, ctx.student_grad, ctx.teacher_grad)
    return (grad_s if ctx.student_grad else None, grad_t if ctx.teacher_grad else None, None, None, None)


_elementwise_op.register_autograd(_backward_elementwise, setup_context=_setup_elementwise)
_cosine_op.register_autograd(_backward_cosine, setup_context=_setup_cosine)


def check_feature_match_options(kind: str = "mse", *, reduction: str = "mean", impl: str = "auto") -> None:
    """Raise ValueError for a bad option of `feature_match` (tensors are checked per call)."""
    check_choice("kind", kind, KINDS)
    check_choice("reduction", reduction, REDUCTIONS)
    check_choice("impl", impl, IMPLS)


def _check_feature_match(student, teacher, kind, reduction) -> None:
    check_pair(student, teacher, reduction)
    check_choice("kind", kind, KINDS)
    if student.shape != teacher.shape:
        raise ValueError(
            f"student and teacher must have the same shape, got {tuple(student.shape)} and {tuple(teacher.shape)}"
        )


def feature_match_ref(student: Tensor, teacher: Tensor, *, kind: str = "mse", reduction: str = "mean") -> Tensor:
    """Pure-PyTorch specification of `feature_match` (fp32 or wider accumulation); same arguments, no `impl`."""
    _check_feature_match(student, teacher, kind, reduction)
    compute_dtype = torch.promote_types(torch.promote_types(student.dtype, teacher.dtype), torch.float32)
    student, teacher = student.to(compute_dtype), teacher.to(compute_dtype)
    if kind == "mse":
        per_element = (student - teacher).square()
    elif kind == "l1":
        per_element = (student - teacher).abs()
    elif kind == "smooth_l1":
        per_element = F.smooth_l1_loss(student, teacher, reduction="none", beta=1.0)
    else:
        per_element = 1.0 - F.cosine_similarity(student, teacher, dim=1, eps=COSINE_EPS)
    return reduce_reference(per_element, reduction)


def feature_match(
    student: Tensor, teacher: Tensor, *, kind: str = "mse", reduction: str = "mean", impl: str = "auto"
) -> Tensor:
    """Match a student feature map to the teacher's, elementwise or by cosine along channels.

    Per element e = (s - t)^2 ("mse"), |s - t| ("l1"), or Huber with beta 1 ("smooth_l1", as
    torch.nn.functional.smooth_l1_loss); "cosine" gives one e = 1 - cos(s, t) per position, the cosine
    taken along dim 1 (eps 1e-8 as torch.nn.functional.cosine_similarity).

    Args:
        student: [N, C, *spatial] or [N, C] float16/bfloat16/float32 (float64 on the reference path).
            Contiguous and channels_last maps are read in place, without copies.
        teacher: same shape and device; its dtype may differ. Gets a gradient when it requires grad.
        kind: "mse", "l1", "smooth_l1" or "cosine".
        reduction: "mean" (over all e), "sum", or "none" (e itself: the input's shape, or [N, *spatial]
            for cosine).
        impl: "auto" (Triton for CUDA tensors when available, else the reference), "triton", "reference".

    Returns:
        float32 loss (float64 for float64 inputs), a scalar unless reduction="none".

    On the Triton path gradients are first order: a backward with create_graph=True raises, and so does a
    second backward through the same graph where the forward wrote the gradients (use impl="reference").
    """
    _check_feature_match(student, teacher, kind, reduction)
    if not runs_triton(impl, "feature_match", student, teacher):
        return feature_match_ref(student, teacher, kind=kind, reduction=reduction)
    student_grad = student.requires_grad and torch.is_grad_enabled()
    teacher_grad = teacher.requires_grad and torch.is_grad_enabled()
    if kind == "cosine":
        loss = _cosine_op(as_channels_positions(student), as_channels_positions(teacher), reduction, student_grad,
                          teacher_grad)[0]  # fmt: skip
        return loss.reshape(student.shape[:1] + student.shape[2:]) if reduction == "none" else loss
    dense_student = dense(student)
    return _elementwise_op(dense_student, like_layout(teacher, dense_student), kind, reduction, student_grad,
                           teacher_grad)[0]  # fmt: skip
