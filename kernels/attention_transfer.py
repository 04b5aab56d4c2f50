"""Attention transfer (Zagoruyko & Komodakis): Triton kernels, custom ops, reference and dispatcher.

The attention map of a feature map x [N, C, *spatial] is a(x) = normalize_P(mean_C |x|^p). The forward is
two launches: one pass over student and teacher builds their small maps q = mean_C |x|^p ([2, N, P], fp32);
then one program per sample normalizes its two maps and writes its loss (per sample, or per position for
reduction "none"), and for "mean" and "sum" overwrites the maps with the loss's gradients with respect to
them (dq, for an upstream gradient of 1). The backward re-reads each wanted x once and writes
g · dq · p/C · |x|^(p-1) · sign(x) in x's layout and dtype (g the upstream gradient, rounded once); for
"none", whose upstream gradient is a map, a per-sample launch first computes dq from it and the saved maps.
"""

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ._checks import check_choice, check_number
from ._dispatch import (
    IMPLS,
    first_order_only,
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
    mean_gradient_scale,
    nan_sign,
    reduce_reference,
    sample_positions,
)

NORMALIZE_EPS = 1e-12  # as torch.nn.functional.normalize
BLOCK_C = 16
BLOCK_P = 128
# The per-sample tail: positions per step, and warps. One program per sample walks its maps three times, so
# wide steps keep a few samples of large maps (N = 1, 256 x 256 positions: 16 steps a pass) from serializing.
TAIL_BLOCK = 4096
TAIL_WARPS = 8


@triton.jit
def _abs_power(x, power, POWER: tl.constexpr):
    # |x|^power; POWER 2 and 1 are exact special cases, 0 is any other power (0 at x == 0).
    if POWER == 2:
        return x * x
    elif POWER == 1:
        return tl.abs(x)
    else:
        magnitude = tl.abs(x)
        return tl.where(magnitude == 0.0, 0.0, tl.exp2(power * tl.log2(magnitude)))


@triton.jit
def _abs_power_slope(x, power, POWER: tl.constexpr):
    # d|x|^power / dx, taken as 0 at x == 0; NaN stays NaN.
    sign = nan_sign(x)
    if POWER == 2:
        return 2.0 * x
    elif POWER == 1:
        return sign
    else:
        magnitude = tl.abs(x)
        return tl.where(magnitude == 0.0, 0.0, power * tl.exp2((power - 1.0) * tl.log2(magnitude)) * sign)


@triton.jit
def _channel_power_mean(x_ptr, x_sn, x_sc, x_sp, C, n, positions, in_p, power, POWER: tl.constexpr,
                        BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):  # fmt: skip
    # mean over the C channels of |x|^power at one block of a sample's positions.
    base = x_ptr + n * x_sn + positions[None, :] * x_sp
    total = tl.zeros([BLOCK_P], dtype=tl.float32)
    for c0 in range(0, C, BLOCK_C):
        c = (c0 + tl.arange(0, BLOCK_C))[:, None].to(tl.int64)
        x = tl.load(base + c * x_sc, mask=(c < C) & in_p[None, :], other=0.0).to(tl.float32)
        total += tl.sum(_abs_power(x, power, POWER), axis=0)
    return total / C


@triton.jit
def _attention_maps_kernel(
    s_ptr, s_sn, s_sc, s_sp, s_C,  # [N, Cs, P] student map, its strides and channels
    t_ptr, t_sn, t_sc, t_sp, t_C,  # [N, Ct, P] teacher map, its strides and channels
    maps_ptr,  # [2, N, P] fp32 output: mean over channels of |x|^power, student then teacher
    N, P, power,
    POWER: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
):  # fmt: skip
    # Program (sample and position block flattened on axis 0, side on axis 1: 0 student, 1 teacher).
    n, positions, in_p = sample_positions(P, BLOCK_P)
    side = tl.program_id(1)
    if side == 0:
        q = _channel_power_mean(s_ptr, s_sn, s_sc, s_sp, s_C, n, positions, in_p, power, POWER, BLOCK_C, BLOCK_P)
    else:
        q = _channel_power_mean(t_ptr, t_sn, t_sc, t_sp, t_C, n, positions, in_p, power, POWER, BLOCK_C, BLOCK_P)
    tl.store(maps_ptr + (side * N + n) * P + positions, q, mask=in_p)


@triton.jit
def _normalized_block(q_row, offsets, P, inverse_norm):
    in_p = offsets < P
    return tl.load(q_row + offsets, mask=in_p, other=0.0) * inverse_norm, in_p


@triton.jit
def _attention_tail_kernel(
    maps_ptr,  # [2, N, P] fp32 maps q of student and teacher
    dmaps_ptr,  # [2, N, P] fp32 output dL/dq (WRITE_GRAD); may be maps_ptr itself (each value read, then written)
    loss_ptr,  # output: [N] fp32 sample losses times scale (LOSS 1), or [N, P] per-position losses (LOSS 2)
    g_ptr, g_sn, g_sp,  # [N, P] upstream gradient of the per-position loss and its strides (HAS_UPSTREAM)
    N, P,
    scale,  # 1 / (N * P) for reduction "mean", else 1
    eps,
    LOSS: tl.constexpr,  # 0 none, 1 per sample, 2 per position
    WRITE_GRAD: tl.constexpr, HAS_UPSTREAM: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    # One program per sample, three passes over its two maps: the norms; the loss, and the dot products of each
    # normalized map with u = g (a_s - a_t); the gradients. a = q / max(|q|, eps) has Jacobian (I - a a^T) / |q|
    # where |q| > eps, else I / eps (torch's clamp_min passes no gradient at equality). A NaN norm stays NaN.
    n = tl.program_id(0).to(tl.int64)
    qs_row = maps_ptr + n * P
    qt_row = maps_ptr + (N + n) * P
    sq_s = 0.0
    sq_t = 0.0
    for start in range(0, P, BLOCK):
        offsets = start + tl.arange(0, BLOCK).to(tl.int64)
        q_s, _ = _normalized_block(qs_row, offsets, P, 1.0)
        q_t, _ = _normalized_block(qt_row, offsets, P, 1.0)
        sq_s += tl.sum(q_s * q_s, axis=0)
        sq_t += tl.sum(q_t * q_t, axis=0)
    norm_s = tl.sqrt_rn(sq_s)  # rounded as torch's norm is: which side of eps a norm lies decides the branch
    norm_t = tl.sqrt_rn(sq_t)
    inverse_s = 1.0 / tl.maximum(norm_s, eps, propagate_nan=tl.PropagateNan.ALL)
    inverse_t = 1.0 / tl.maximum(norm_t, eps, propagate_nan=tl.PropagateNan.ALL)
    loss = 0.0
    dot_s = 0.0
    dot_t = 0.0
    for start in range(0, P, BLOCK):
        offsets = start + tl.arange(0, BLOCK).to(tl.int64)
        a_s, in_p = _normalized_block(qs_row, offsets, P, inverse_s)
        a_t, _ = _normalized_block(qt_row, offsets, P, inverse_t)
        d = a_s - a_t
        if LOSS == 1:
            loss += tl.sum(d * d, axis=0)
        if LOSS == 2:
            tl.store(loss_ptr + n * P + offsets, d * d, mask=in_p)
        if WRITE_GRAD:
            if HAS_UPSTREAM:
                d = d * tl.load(g_ptr + n * g_sn + offsets * g_sp, mask=in_p, other=0.0).to(tl.float32)
            dot_s += tl.sum(a_s * d, axis=0)
            dot_t += tl.sum(a_t * d, axis=0)
    if LOSS == 1:
        tl.store(loss_ptr + n, loss * scale)
    if WRITE_GRAD:
        # Both maps' gradients are written (they are small); the backward reads the wanted ones.
        project_s = tl.where(norm_s > eps, dot_s, 0.0)
        project_t = tl.where(norm_t > eps, dot_t, 0.0)
        for start in range(0, P, BLOCK):
            offsets = start + tl.arange(0, BLOCK).to(tl.int64)
            a_s, in_p = _normalized_block(qs_row, offsets, P, inverse_s)
            a_t, _ = _normalized_block(qt_row, offsets, P, inverse_t)
            u = a_s - a_t
            if HAS_UPSTREAM:
                u = u * tl.load(g_ptr + n * g_sn + offsets * g_sp, mask=in_p, other=0.0).to(tl.float32)
            tl.store(dmaps_ptr + n * P + offsets, 2.0 * scale * inverse_s * (u - a_s * project_s), mask=in_p)
            tl.store(dmaps_ptr + (N + n) * P + offsets, 2.0 * scale * inverse_t * (a_t * project_t - u), mask=in_p)


@triton.jit
def _channel_power_mean_grad(x_ptr, x_sn, x_sc, x_sp, C, dx_ptr, dq, n, positions, in_p, power,
                             POWER: tl.constexpr, BLOCK_C: tl.constexpr):  # fmt: skip
    # dx = dq / C * d|x|^power/dx at one block of a sample's positions, in dx's dtype (x's strides).
    dq = dq / C
    offsets = n * x_sn + positions[None, :] * x_sp
    for c0 in range(0, C, BLOCK_C):
        c = (c0 + tl.arange(0, BLOCK_C))[:, None].to(tl.int64)
        tile = (c < C) & in_p[None, :]
        x = tl.load(x_ptr + offsets + c * x_sc, mask=tile, other=0.0).to(tl.float32)
        dx = dq[None, :] * _abs_power_slope(x, power, POWER)
        tl.store(dx_ptr + offsets + c * x_sc, dx.to(dx_ptr.dtype.element_ty), mask=tile)


@triton.jit
def _attention_maps_grad_kernel(
    s_ptr, s_sn, s_sc, s_sp, s_C,  # [N, Cs, P] student map and its strides; ds_ptr has the same strides
    t_ptr, t_sn, t_sc, t_sp, t_C,  # [N, Ct, P] teacher map and its strides; dt_ptr has the same strides
    ds_ptr, dt_ptr,  # gradient outputs, in the maps' dtypes
    dmaps_ptr,  # [2, N, P] fp32 gradients of the maps q, contiguous
    g_ptr,  # [] upstream gradient multiplying dmaps (HAS_UPSTREAM)
    N, P, power,
    first_side,  # 0 when the student's gradient is wanted, else 1 (the teacher's alone)
    POWER: tl.constexpr, HAS_UPSTREAM: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
):  # fmt: skip
    # Program (sample and position block on axis 0, side first_side + axis 1).
    n, positions, in_p = sample_positions(P, BLOCK_P)
    side = first_side + tl.program_id(1)
    dq = tl.load(dmaps_ptr + (side * N + n) * P + positions, mask=in_p, other=0.0)
    if HAS_UPSTREAM:
        dq = dq * tl.load(g_ptr).to(tl.float32)
    if side == 0:
        _channel_power_mean_grad(s_ptr, s_sn, s_sc, s_sp, s_C, ds_ptr, dq, n, positions, in_p, power, POWER, BLOCK_C)
    else:
        _channel_power_mean_grad(t_ptr, t_sn, t_sc, t_sp, t_C, dt_ptr, dq, n, positions, in_p, power, POWER, BLOCK_C)


def _power_code(power: float) -> int:
    return 2 if power == 2.0 else 1 if power == 1.0 else 0


def _map_arguments(x: Tensor) -> tuple:
    # A [N, C, P] map as the kernels take it: pointer, three strides, channels.
    return (x, *x.stride(), x.shape[1])


def _maps_grid(channels_positions: Tensor, sides: int) -> tuple[int, int]:
    n_samples, _, n_positions = channels_positions.shape
    return (triton.cdiv(n_positions, BLOCK_P) * n_samples, sides)


def _maps_buffer(student: Tensor) -> Tensor:
    # [2, N, P] fp32 for the student [N, Cs, P] and its teacher.
    return student.new_empty((2, student.shape[0], student.shape[2]), dtype=torch.float32)


def _attention_maps(student: Tensor, teacher: Tensor, power: float) -> Tensor:
    """student [N, Cs, P], teacher [N, Ct, P] (any strides) -> fp32 [2, N, P]: mean over channels of |x|^power."""
    n_samples, _, n_positions = student.shape
    maps = _maps_buffer(student)
    _attention_maps_kernel[_maps_grid(student, 2)](
        *_map_arguments(student), *_map_arguments(teacher), maps, n_samples, n_positions, power,
        POWER=_power_code(power), BLOCK_C=BLOCK_C, BLOCK_P=BLOCK_P,
    )  # fmt: skip
    return maps


def _launch_tail(maps: Tensor, dmaps: Tensor, loss: Tensor, upstream: Tensor | None, scale: float, loss_kind: int,
                 write_grad: bool) -> None:  # fmt: skip
    # _attention_tail_kernel on maps [2, N, P]; `upstream` [N, P] (any strides) or None for 1.
    _, n_samples, n_positions = maps.shape
    g, g_strides = (upstream, upstream.stride()) if upstream is not None else (maps, (0, 0))
    _attention_tail_kernel[(n_samples,)](
        maps, dmaps, loss, g, *g_strides, n_samples, n_positions, scale, NORMALIZE_EPS, LOSS=loss_kind,
        WRITE_GRAD=write_grad, HAS_UPSTREAM=upstream is not None, BLOCK=TAIL_BLOCK, num_warps=TAIL_WARPS,
    )  # fmt: skip


@torch.library.custom_op("gankd::attention_transfer", mutates_args=())
def _attention_transfer_op(student: Tensor, teacher: Tensor, power: float, reduction: str, student_grad: bool,
                           teacher_grad: bool) -> tuple[Tensor, Tensor]:  # fmt: skip
    """student [N, Cs, P], teacher [N, Ct, P] (any strides). Returns (loss, maps [2, N, P] fp32): the loss is
    per position ([N, P]) for reduction "none", and the maps are the unnormalized attention maps q then; for
    "mean" and "sum" they are dL/dq for upstream 1 when a gradient is wanted."""
    maps = _attention_maps(student, teacher, power)
    n_samples, _, n_positions = student.shape
    if reduction == "none":
        loss = maps.new_empty((n_samples, n_positions))
        _launch_tail(maps, maps, loss, None, 1.0, loss_kind=2, write_grad=False)
        return loss, maps
    loss_rows = maps.new_empty(n_samples)
    scale = mean_gradient_scale(reduction, n_samples * n_positions)
    _launch_tail(maps, maps, loss_rows, None, scale, loss_kind=1, write_grad=student_grad or teacher_grad)
    return loss_rows.sum(), maps


@_attention_transfer_op.register_fake
def _attention_transfer_fake(student, teacher, power, reduction, student_grad, teacher_grad):
    loss_shape = (student.shape[0], student.shape[2]) if reduction == "none" else ()
    return student.new_empty(loss_shape, dtype=torch.float32), _maps_buffer(student)


@torch.library.custom_op("gankd::attention_tail_grad", mutates_args=())
def _attention_tail_grad_op(maps: Tensor, grad_loss: Tensor) -> Tensor:
    """dL/dq [2, N, P] of L = sum(grad_loss * e), e the per-position losses of the maps q [2, N, P]."""
    grad_maps = torch.empty_like(maps)
    _launch_tail(maps, grad_maps, maps, grad_loss, 1.0, loss_kind=0, write_grad=True)
    return grad_maps


@_attention_tail_grad_op.register_fake
def _attention_tail_grad_fake(maps, grad_loss):
    return torch.empty_like(maps)


@torch.library.custom_op("gankd::attention_maps_grad", mutates_args=())
def _attention_maps_grad_op(student: Tensor | None, teacher: Tensor | None, grad_maps: Tensor,
                            upstream: Tensor | None, power: float) -> tuple[Tensor, Tensor]:  # fmt: skip
    """Gradients (of student, of teacher; [0] for None) of sum(upstream * grad_maps * q), q the attention maps
    (upstream a 0-d tensor, or None for 1); grad_maps [2, N, P] fp32 contiguous."""
    present = student if student is not None else teacher
    grad_s, grad_t = _input_gradient_buffers(student, teacher)
    n_samples, _, n_positions = present.shape
    _attention_maps_grad_kernel[_maps_grid(present, (student is not None) + (teacher is not None))](
        *_map_arguments(student if student is not None else present),
        *_map_arguments(teacher if teacher is not None else present),
        grad_s, grad_t, grad_maps, upstream if upstream is not None else grad_maps, n_samples, n_positions, power,
        0 if student is not None else 1, POWER=_power_code(power), HAS_UPSTREAM=upstream is not None,
        BLOCK_C=BLOCK_C, BLOCK_P=BLOCK_P,
    )  # fmt: skip
    return grad_s, grad_t


def _input_gradient_buffers(student: Tensor | None, teacher: Tensor | None) -> tuple[Tensor, Tensor]:
    # Like each map that is given (its strides and dtype), [0] for the other.
    present = student if student is not None else teacher
    return tuple(torch.empty_like(x) if x is not None else present.new_empty(0) for x in (student, teacher))


@_attention_maps_grad_op.register_fake
def _attention_maps_grad_fake(student, teacher, grad_maps, upstream, power):
    return _input_gradient_buffers(student, teacher)


def _setup_attention_transfer(ctx, inputs, output):
    student, teacher, ctx.power, ctx.reduction, ctx.student_grad, ctx.teacher_grad = inputs
    _, maps = output
    only_the_loss_is_differentiable(ctx, maps)
    # Only the feature maps whose gradients are wanted are saved: a teacher made under inference mode is copied
    # to be saved (`saveable`), which one that gets no gradient does not need.
    wanted = (student if ctx.student_grad else None, teacher if ctx.teacher_grad else None)
    ctx.save_for_backward(*saveable(*wanted), maps)


@first_order_only("attention_transfer")
def _backward_attention_transfer(ctx, grad_loss, _unused_maps):
    if grad_loss is None or not (ctx.student_grad or ctx.teacher_grad):
        return no_gradients(ctx)
    student, teacher, maps = ctx.saved_tensors
    if ctx.reduction == "none":
        grad_s, grad_t = _attention_maps_grad_op(student, teacher, _attention_tail_grad_op(maps, grad_loss), None,
                                                 ctx.power)  # fmt: skip
    else:
        grad_s, grad_t = _attention_maps_grad_op(student, teacher, maps, grad_loss, ctx.power)
    return (grad_s if ctx.student_grad else None), (grad_t if ctx.teacher_grad else None), None, None, None, None


_attention_transfer_op.register_autograd(_backward_attention_transfer, setup_context=_setup_attention_transfer)


def check_attention_transfer_options(p: float = 2, *, reduction: str = "mean", impl: str = "auto") -> float:
    """Raise ValueError/TypeError for a bad option of `attention_transfer`; returns p as a float."""
    check_choice("reduction", reduction, REDUCTIONS)
    check_choice("impl", impl, IMPLS)
    return check_number("p", p, positive=True)


def _check_attention_transfer(student, teacher, p, reduction) -> float:
    check_pair(student, teacher, reduction)
    if student.shape[0] != teacher.shape[0] or student.shape[2:] != teacher.shape[2:]:
        raise ValueError(
            "student and teacher must have the same batch size and spatial sizes (channels may differ), got "
            f"{tuple(student.shape)} and {tuple(teacher.shape)}"
        )
    for name, features in (("student", student), ("teacher", teacher)):
        if features.shape[1] == 0:
            raise ValueError(f"{name} has no channels, shape {tuple(features.shape)}: an attention map averages "
                             "|x|^p over channels")  # fmt: skip
    if math.prod(student.shape[2:]) == 1:
        # One position normalizes to 1 (0 where q is 0) in every map: a constant loss without gradient.
        raise ValueError(
            f"student and teacher need more than one spatial position, got {tuple(student.shape)} and "
            f"{tuple(teacher.shape)}: with one, every attention map is 1 (0 where |x|^p is all 0), so the loss is "
            "constant and gives no gradient; tap layers before global pooling, or compare vectors with feature_match"
        )
    return check_number("p", p, positive=True)


def _loss_from_maps(student_map: Tensor, teacher_map: Tensor, reduction: str, map_shape: torch.Size) -> Tensor:
    # Maps [N, P] of mean_C |x|^p -> normalized over positions, squared difference, reduced.
    student_attention = F.normalize(student_map, dim=1, eps=NORMALIZE_EPS)
    teacher_attention = F.normalize(teacher_map, dim=1, eps=NORMALIZE_EPS)
    difference = (student_attention - teacher_attention).square()
    return reduce_reference(difference.reshape(map_shape) if reduction == "none" else difference, reduction)


def attention_transfer_ref(student: Tensor, teacher: Tensor, *, p: float = 2, reduction: str = "mean") -> Tensor:
    """Pure-PyTorch specification of `attention_transfer` (fp32 or wider); same arguments, no `impl`."""
    power = _check_attention_transfer(student, teacher, p, reduction)

    def attention_map(features: Tensor) -> Tensor:
        features = features.to(torch.promote_types(features.dtype, torch.float32))
        magnitude = features.abs()
        # |x|^p with the gradient at x == 0 taken as 0 for every p (pow alone gives NaN there for p < 1).
        safe = torch.where(magnitude == 0, 1.0, magnitude)
        powered = torch.where(magnitude == 0, 0.0, safe.pow(power))
        return powered.mean(dim=1).reshape(features.shape[0], math.prod(features.shape[2:]))  # [N, P], N may be 0

    return _loss_from_maps(attention_map(student), attention_map(teacher), reduction,
                           student.shape[:1] + student.shape[2:])  # fmt: skip


def attention_transfer(
    student: Tensor, teacher: Tensor, *, p: float = 2, reduction: str = "mean", impl: str = "auto"
) -> Tensor:
    """Attention-transfer loss between feature maps (Zagoruyko & Komodakis, 2017).

    a(x) = q / max(||q||_2, 1e-12) with q = mean over channels of |x|^p, per sample, the norm taken over
    positions (as F.normalize); e = (a(student) - a(teacher))^2, one value per position.

    Args:
        student: [N, Cs, *spatial] float16/bfloat16/float32 (float64 on the reference path), Cs ≥ 1 and
            more than one position (with one, every map is constant and the loss gives no gradient); contiguous and
            channels_last maps are read in place.
        teacher: [N, Ct, *spatial]: same batch and spatial sizes and device, any channel count and dtype.
            Gets a gradient when it requires grad.
        p: the power, > 0 (2 in the paper).
        reduction: "mean" over all N·P values of e (0 when there are none), "sum", or "none" (e shaped
            [N, *spatial]).
        impl: "auto" (Triton for CUDA tensors when available, else the reference), "triton", "reference".

    Returns:
        float32 loss (float64 for float64 inputs), a scalar unless reduction="none". The gradient of
        |x|^p at x == 0 is taken as 0.
    """
    power = _check_attention_transfer(student, teacher, p, reduction)
    if not runs_triton(impl, "attention_transfer", student, teacher):
        return attention_transfer_ref(student, teacher, p=power, reduction=reduction)
    student_grad = student.requires_grad and torch.is_grad_enabled()
    teacher_grad = teacher.requires_grad and torch.is_grad_enabled()
    loss = _attention_transfer_op(as_channels_positions(student), as_channels_positions(teacher), power, reduction,
                                  student_grad, teacher_grad)[0]  # fmt: skip
    return loss.reshape(student.shape[:1] + student.shape[2:]) if reduction == "none" else loss
