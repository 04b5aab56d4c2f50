"""Attention transfer (Zagoruyko & Komodakis): Triton kernels, custom op, reference and dispatcher.

The attention map of a feature map x [N, C, *spatial] is a(x) = normalize_P(mean_C |x|^p): one pass over x
builds the small map q = mean_C |x|^p ([N, P], fp32), and everything after it (normalization over
positions, squared difference, reduction) runs on those small maps with ordinary autograd. The backward of
q re-reads x once and writes its gradient, dq · p/C · |x|^(p-1) · sign(x), in x's layout and dtype.
"""

import torch
import torch.nn.functional as F
from torch import Tensor

from ._checks import check_choice, check_number
from ._dispatch import IMPLS, runs_triton, tl, triton
from ._features import REDUCTIONS, as_channels_positions, check_pair, nan_sign, sample_positions

NORMALIZE_EPS = 1e-12  # as torch.nn.functional.normalize
BLOCK_C = 16
BLOCK_P = 128


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
def _channel_power_mean_kernel(
    x_ptr, x_sn, x_sc, x_sp,  # [N, C, P] feature map and its strides
    q_ptr,  # [N, P] fp32 output: mean over channels of |x|^power
    C, P, inv_channels, power,
    POWER: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
):  # fmt: skip
    n, positions, in_p = sample_positions(P, BLOCK_P)  # (sample, position block) flattened on axis 0
    base = x_ptr + n * x_sn + positions[None, :] * x_sp
    total = tl.zeros([BLOCK_P], dtype=tl.float32)
    for c0 in range(0, C, BLOCK_C):
        c = (c0 + tl.arange(0, BLOCK_C))[:, None].to(tl.int64)
        x = tl.load(base + c * x_sc, mask=(c < C) & in_p[None, :], other=0.0).to(tl.float32)
        total += tl.sum(_abs_power(x, power, POWER), axis=0)
    tl.store(q_ptr + n * P + positions, total * inv_channels, mask=in_p)


@triton.jit
def _channel_power_mean_grad_kernel(
    x_ptr, x_sn, x_sc, x_sp,  # [N, C, P] feature map and its strides; dx_ptr has the same strides
    dq_ptr,  # [N, P] fp32 gradient of the map q, contiguous
    dx_ptr,  # [N, C, P] gradient output, x's dtype
    C, P, inv_channels, power,
    POWER: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
):  # fmt: skip
    n, positions, in_p = sample_positions(P, BLOCK_P)  # (sample, position block) flattened on axis 0
    dq = tl.load(dq_ptr + n * P + positions, mask=in_p, other=0.0) * inv_channels
    offsets = n * x_sn + positions[None, :] * x_sp
    for c0 in range(0, C, BLOCK_C):
        c = (c0 + tl.arange(0, BLOCK_C))[:, None].to(tl.int64)
        tile = (c < C) & in_p[None, :]
        x = tl.load(x_ptr + offsets + c * x_sc, mask=tile, other=0.0).to(tl.float32)
        dx = dq[None, :] * _abs_power_slope(x, power, POWER)
        tl.store(dx_ptr + offsets + c * x_sc, dx.to(dx_ptr.dtype.element_ty), mask=tile)


def _power_code(power: float) -> int:
    return 2 if power == 2.0 else 1 if power == 1.0 else 0


def _grid(channels_positions: Tensor) -> tuple[int]:
    n_samples, _, n_positions = channels_positions.shape
    return (triton.cdiv(n_positions, BLOCK_P) * n_samples,)


@torch.library.custom_op("gankd::channel_power_mean", mutates_args=())
def _channel_power_mean_op(features: Tensor, power: float) -> Tensor:
    """features [N, C, P] (any strides) -> fp32 [N, P] mean over channels of |x|^power."""
    n_samples, n_channels, n_positions = features.shape
    maps = features.new_empty((n_samples, n_positions), dtype=torch.float32)
    _channel_power_mean_kernel[_grid(features)](
        features, *features.stride(), maps, n_channels, n_positions, 1.0 / n_channels, power,
        POWER=_power_code(power), BLOCK_C=BLOCK_C, BLOCK_P=BLOCK_P,
    )  # fmt: skip
    return maps


@_channel_power_mean_op.register_fake
def _channel_power_mean_fake(features, power):
    return features.new_empty((features.shape[0], features.shape[2]), dtype=torch.float32)


@torch.library.custom_op("gankd::channel_power_mean_grad", mutates_args=())
def _channel_power_mean_grad_op(features: Tensor, grad_maps: Tensor, power: float) -> Tensor:
    """Gradient w.r.t. features [N, C, P] of sum(grad_maps * q); same layout and dtype as features."""
    n_samples, n_channels, n_positions = features.shape
    grad = torch.empty_like(features)
    _channel_power_mean_grad_kernel[_grid(features)](
        features, *features.stride(), grad_maps, grad, n_channels, n_positions, 1.0 / n_channels, power,
        POWER=_power_code(power), BLOCK_C=BLOCK_C, BLOCK_P=BLOCK_P,
    )  # fmt: skip
    return grad


@_channel_power_mean_grad_op.register_fake
def _channel_power_mean_grad_fake(features, grad_maps, power):
    return torch.empty_like(features)


def _setup_context(ctx, inputs, output):
    features, ctx.power = inputs
    ctx.save_for_backward(features)


def _backward(ctx, grad_maps):
    (features,) = ctx.saved_tensors
    return _channel_power_mean_grad_op(features, grad_maps.contiguous(), ctx.power), None


_channel_power_mean_op.register_autograd(_backward, setup_context=_setup_context)


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
    return check_number("p", p, positive=True)


def _loss_from_maps(student_map: Tensor, teacher_map: Tensor, reduction: str, map_shape: torch.Size) -> Tensor:
    # Maps [N, P] of mean_C |x|^p -> normalized over positions, squared difference, reduced.
    student_attention = F.normalize(student_map, dim=1, eps=NORMALIZE_EPS)
    teacher_attention = F.normalize(teacher_map, dim=1, eps=NORMALIZE_EPS)
    difference = (student_attention - teacher_attention).square()
    if reduction == "none":
        return difference.reshape(map_shape)
    return difference.mean() if reduction == "mean" else difference.sum()


def attention_transfer_ref(student: Tensor, teacher: Tensor, *, p: float = 2, reduction: str = "mean") -> Tensor:
    """Pure-PyTorch specification of `attention_transfer` (fp32 or wider); same arguments, no `impl`."""
    power = _check_attention_transfer(student, teacher, p, reduction)

    def attention_map(features: Tensor) -> Tensor:
        features = features.to(torch.promote_types(features.dtype, torch.float32))
        magnitude = features.abs()
        # |x|^p with the gradient at x == 0 taken as 0 for every p (pow alone gives NaN there for p < 1).
        safe = torch.where(magnitude == 0, 1.0, magnitude)
        powered = torch.where(magnitude == 0, 0.0, safe.pow(power))
        return powered.mean(dim=1).reshape(features.shape[0], -1)

    return _loss_from_maps(attention_map(student), attention_map(teacher), reduction,
                           student.shape[:1] + student.shape[2:])  # fmt: skip


def attention_transfer(
    student: Tensor, teacher: Tensor, *, p: float = 2, reduction: str = "mean", impl: str = "auto"
) -> Tensor:
    """Attention-transfer loss between feature maps (Zagoruyko & Komodakis, 2017).

    a(x) = q / max(||q||_2, 1e-12) with q = mean over channels of |x|^p, per sample, the norm taken over
    positions (as F.normalize); e = (a(student) - a(teacher))^2, one value per position.

    Args:
        student: [N, Cs, *spatial] (or [N, Cs]) float16/bfloat16/float32 (float64 on the reference path);
            contiguous and channels_last maps are read in place.
        teacher: [N, Ct, *spatial]: same batch and spatial sizes and device, any channel count and dtype.
            Gets a gradient when it requires grad.
        p: the power, > 0 (2 in the paper).
        reduction: "mean" over all N·P values of e, "sum", or "none" (e shaped [N, *spatial]).
        impl: "auto" (Triton for CUDA tensors when available, else the reference), "triton", "reference".

    Returns:
        float32 loss (float64 for float64 inputs), a scalar unless reduction="none". The gradient of
        |x|^p at x == 0 is taken as 0.
    """
    power = _check_attention_transfer(student, teacher, p, reduction)
    if not runs_triton(impl, "attention_transfer", student, teacher):
        return attention_transfer_ref(student, teacher, p=power, reduction=reduction)
    student_map = _channel_power_mean_op(as_channels_positions(student), power)
    teacher_map = _channel_power_mean_op(as_channels_positions(teacher), power)
    return _loss_from_maps(student_map, teacher_map, reduction, student.shape[:1] + student.shape[2:])
