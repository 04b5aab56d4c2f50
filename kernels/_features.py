"""Pieces shared by the feature-map losses: layouts, argument checks, loss reduction, in-place gradient scaling.

Feature maps are [N, C, *spatial] (or [N, C]). The kernels see them as [N, C, P] with P the flattened
spatial positions and three strides, which covers contiguous NCHW (strides C·P, P, 1) and channels_last
(strides P·C, 1, C) without copies; any other layout is copied to contiguous first.
"""

import torch
from torch import Tensor

from ._checks import check_choice, check_float_tensor, check_same_device
from ._dispatch import rounds_to_fp16, tl, triton

REDUCTIONS = ("mean", "sum", "none")
SCALE_BLOCK = 2048


def check_feature_map(name: str, value: object) -> Tensor:
    """A float tensor [N, C, *spatial] or [N, C]."""
    check_float_tensor(name, value)
    if value.dim() < 2:
        raise ValueError(f"{name} must have shape [N, C, *spatial] or [N, C], got {tuple(value.shape)}")
    return value


def check_pair(student: object, teacher: object, reduction: str) -> None:
    check_feature_map("student", student)
    check_feature_map("teacher", teacher)
    check_same_device(student=student, teacher=teacher)
    check_choice("reduction", reduction, REDUCTIONS)


def dense_layout(x: Tensor) -> bool:
    """True when x covers its memory without gaps or overlap: contiguous in some dim order (NCHW, channels_last
    or any other), so empty_like keeps its strides, which the kernels assume of their outputs.

    Each stride (of a dim longer than 1) must be the product of the sizes of the dims with smaller strides, and
    no two equal. Pairwise comparisons, not a sort: torch.compile traces these for symbolic strides."""
    dims = [(stride, size) for size, stride in zip(x.shape, x.stride(), strict=True) if size != 1]
    for number, (stride, _) in enumerate(dims):
        below = 1
        for other, (other_stride, other_size) in enumerate(dims):
            if other != number and other_stride == stride:
                return False
            if other_stride < stride:
                below *= other_size
        if stride != below:
            return False
    return True


def dense(x: Tensor) -> Tensor:
    """x itself when `dense_layout(x)`, else a contiguous copy."""
    return x if dense_layout(x) else x.contiguous()


def maybe_empty_like(x: Tensor, wanted: bool, dtype: torch.dtype | None = None) -> Tensor:
    """An output buffer like x (its strides) when `wanted`, else an empty placeholder the kernels skip."""
    return torch.empty_like(x, dtype=dtype) if wanted else x.new_empty(0, dtype=dtype)


def mean_gradient_scale(reduction: str, count: int) -> float:
    """The factor of the loss and of its gradient for an upstream gradient of 1: 1/count for a mean over count
    terms, else 1. The kernels apply it to their partial sums, so the reduced loss is one sum of those."""
    return 1.0 / count if reduction == "mean" else 1.0


def fuses_gradients(reduction: str, *rounded: tuple[Tensor, bool]) -> bool:
    """Whether the forward writes the gradients for an upstream gradient of 1, which the backward rescales in
    place (skipped on the device when the upstream gradient is 1). Otherwise the backward computes them from
    the upstream gradient, which costs the forward's reads of the maps once more.

    `rounded`: (tensor, wanted) pairs, a gradient the forward would round to tensor's dtype when it is wanted
    (the student's and the teacher's; an adapter's dy before fp16 products). Not for reduction "none" (the
    upstream gradient is a map), nor when one of them is wanted and fp16, whose range cannot hold the
    gradient for an upstream gradient of 1: a mean's slope / M falls under fp16's smallest subnormal (2^-24)
    for large maps before a GradScaler's upstream could lift it, and a slope over 65504 (mse's 2 (s - t),
    cosine's ~1 / |s|) overflows where upstream * slope would not. The backward then rounds upstream * slope
    (/ M) once, as torch does.
    """
    if reduction == "none":
        return False
    return not rounds_to_fp16(*rounded)


def reduce_reference(values: Tensor, reduction: str) -> Tensor:
    """The references' reduction of per-element (or per-position) losses: "mean" (0 over no values, where torch's
    mean gives NaN), "sum", or the values themselves for "none"."""
    if reduction == "none":
        return values
    return values.sum() / max(values.numel(), 1) if reduction == "mean" else values.sum()


def upstream_gradient(grad_loss: Tensor, reduction: str, count: int) -> Tensor:
    """The upstream gradient of each term of a loss over `count` terms: the per-term map itself for reduction
    "none", else the 0-d grad_loss times `mean_gradient_scale` (the kernels broadcast it with stride 0)."""
    return grad_loss if reduction == "none" else grad_loss * mean_gradient_scale(reduction, count)


def gradient_buffers(
    student: Tensor, teacher: Tensor, student_grad: bool, teacher_grad: bool, fused: bool = True
) -> tuple[Tensor, Tensor]:
    """The gradient outputs (grad_s, grad_t), like student and teacher; each empty when it is not wanted, and both
    when the forward does not write them (`fuses_gradients`: the backward's own launch computes them then)."""
    return maybe_empty_like(student, student_grad and fused), maybe_empty_like(teacher, teacher_grad and fused)


def as_channels_positions(x: Tensor) -> Tensor:
    """[N, C, *spatial] -> [N, C, P]: a view for NCHW-contiguous and channels_last maps, else a copy."""
    x = dense(x)
    if x.dim() == 2:
        return x.unsqueeze(-1)
    return x.flatten(2)


def like_layout(x: Tensor, reference: Tensor) -> Tensor:
    """x with the same strides as the dense tensor `reference` (a copy only when they differ)."""
    if x.stride() == reference.stride():
        return x
    return torch.empty_like(reference, dtype=x.dtype).copy_(x)


@triton.jit
def nan_sign(x):
    # sign(x) that keeps NaN: x * 0 is NaN for NaN and 0 for 0 (the slope of |x|, taken as 0 at 0).
    return tl.where(x > 0, 1.0, tl.where(x < 0, -1.0, x * 0.0))


@triton.jit
def sample_positions(P, BLOCK_P: tl.constexpr):
    # A program of a (sample, position block) grid flattened on axis 0: its sample n, its positions (int64)
    # and which of them lie inside the map.
    blocks_per_sample = tl.cdiv(P, BLOCK_P)
    n = (tl.program_id(0) // blocks_per_sample).to(tl.int64)
    positions = (tl.program_id(0) % blocks_per_sample).to(tl.int64) * BLOCK_P + tl.arange(0, BLOCK_P)
    return n, positions, positions < P


@triton.jit
def _scale_kernel(
    grad_ptr,  # [M] dense gradient buffer (any dim order), scaled in place
    grad_output_ptr,  # [] upstream gradient of a scalar loss
    M,
    BLOCK: tl.constexpr,
):
    g = tl.load(grad_output_ptr).to(tl.float32)
    # The common upstream gradient of 1 leaves the buffer untouched: no traffic, decided on the device.
    if g != 1.0:
        offsets = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        in_range = offsets < M
        values = tl.load(grad_ptr + offsets, mask=in_range).to(tl.float32)
        tl.store(grad_ptr + offsets, (values * g).to(grad_ptr.dtype.element_ty), mask=in_range)


@torch.library.custom_op("gankd::scale_by_scalar_", mutates_args=("grad",))
def scale_by_scalar_(grad: Tensor, grad_output: Tensor) -> None:
    """grad *= grad_output (a 0-d tensor) in place, skipped on the device when that is 1. grad must be dense."""
    n_elements = grad.numel()
    if n_elements == 0:
        return
    _scale_kernel[(triton.cdiv(n_elements, SCALE_BLOCK),)](grad, grad_output, n_elements, BLOCK=SCALE_BLOCK)


@scale_by_scalar_.register_fake
def _scale_by_scalar_fake(grad, grad_output):
    return None


def scale_wanted_(grads, wanted, grad_output: Tensor) -> None:
    """`scale_by_scalar_` on each of the forward's saved gradients that is wanted (the others are [0])."""
    for grad, is_wanted in zip(grads, wanted, strict=True):
        if is_wanted:
            scale_by_scalar_(grad, grad_output)
