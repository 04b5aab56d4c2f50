"""Adapter-fused feature matching: custom ops, autograd, reference and dispatcher (kernels in _adapter_kernels.py).

The student map goes through a 1x1 convolution y = W s + b (the "adapter", Cs -> Ct channels) and is
matched to the teacher with mse or l1, without y ever being written to device memory. With reduction
"mean"/"sum" the forward computes the loss and every gradient for upstream gradient 1, and the backward
rescales them in place (skipped on the device when the upstream gradient is 1); with "none", and for fp16
gradients (`_features.fuses_gradients`), the forward writes only the loss and a separate op computes the
gradients from the upstream gradient.
"""

import torch
from torch import Tensor

from ._adapter_args import check_adapted_feature_match_options, check_adapter_inputs, compute_dtype
from ._adapter_kernels import (
    launch_config,
    low_precision_products,
    max_student_channels,
    position_tiles,
    positions_pass,
    weight_pass,
)
from ._dispatch import (
    first_order_only,
    fused_gradients,
    no_gradients,
    only_the_loss_is_differentiable,
    runs_triton,
    saveable,
)
from ._features import (
    as_channels_positions,
    dense,
    fuses_gradients,
    gradient_buffers,
    maybe_empty_like,
    mean_gradient_scale,
    reduce_reference,
    scale_wanted_,
    upstream_gradient,
)


def _maybe_fp32_grad(x: Tensor, wanted: bool) -> Tensor:
    # Weight and bias gradients leave the kernels contiguous in fp32 (cast to the parameter's dtype in backward).
    return x.new_empty(x.shape if wanted else 0, dtype=torch.float32)


def _fused(reduction, student, teacher, weight, student_grad, teacher_grad, weight_grad) -> bool:
    # With fp16 products the weight kernel rounds dy to fp16 before dW's product (as a half-precision conv
    # backward rounds its incoming gradient): an fp16 dy must carry the upstream gradient then too.
    rounded_dy = weight_grad and low_precision_products(student.dtype, weight.dtype)
    return fuses_gradients(reduction, (student, student_grad), (teacher, teacher_grad), (student, rounded_dy))


@torch.library.custom_op("gankd::adapted_feature_match", mutates_args=())
def _adapted_op(
    student: Tensor, teacher: Tensor, weight: Tensor, bias: Tensor | None, kind: str, reduction: str,
    student_grad: bool, teacher_grad: bool, weight_grad: bool, bias_grad: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:  # fmt: skip
    """student [N, Cs, P], teacher [N, Ct, P], weight [Ct, Cs]. Returns (loss, ds, dt, dW, db): the gradients for
    upstream gradient 1 when `fuses_gradients` (dW and db in fp32), else [0]; "none": e [N, Ct, P] fp32 laid
    out like teacher for the loss."""
    student, teacher = dense(student), dense(teacher)
    count = teacher.numel()
    grad_scale = mean_gradient_scale(reduction, count)
    config = launch_config(student, weight, bias, None, kind)
    per_element = reduction == "none"
    fused = _fused(reduction, student, teacher, weight, student_grad, teacher_grad, weight_grad)
    e = maybe_empty_like(teacher, per_element, torch.float32)
    partials = student.new_empty(0 if per_element else position_tiles(student, config), dtype=torch.float32)
    grad_s, grad_t = gradient_buffers(student, teacher, student_grad, teacher_grad, fused)
    positions_pass(student, teacher, weight, bias, None, e, partials, grad_s, grad_t, grad_scale, config)
    grad_w, grad_b = weight_pass(student, teacher, weight, bias, None, grad_scale, weight_grad and fused,
                                 bias_grad and fused, config)  # fmt: skip
    return (e if per_element else partials.sum()), grad_s, grad_t, grad_w, grad_b


@_adapted_op.register_fake
def _adapted_fake(student, teacher, weight, bias, kind, reduction, student_grad, teacher_grad, weight_grad,
                  bias_grad):  # fmt: skip
    student, teacher = dense(student), dense(teacher)
    per_element = reduction == "none"
    fused = _fused(reduction, student, teacher, weight, student_grad, teacher_grad, weight_grad)
    loss = torch.empty_like(teacher, dtype=torch.float32) if per_element else student.new_empty((), dtype=torch.float32)
    return (loss, *gradient_buffers(student, teacher, student_grad, teacher_grad, fused),
            _maybe_fp32_grad(weight, weight_grad and fused),
            _maybe_fp32_grad(bias if bias is not None else weight, bias_grad and fused))  # fmt: skip


@torch.library.custom_op("gankd::adapted_feature_match_grad", mutates_args=())
def _adapted_grad_op(
    student: Tensor, teacher: Tensor, weight: Tensor, bias: Tensor | None, grad_e: Tensor, kind: str,
    student_grad: bool, teacher_grad: bool, weight_grad: bool, bias_grad: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:  # fmt: skip
    """Gradients of sum(grad_e * e): (ds, dt, dW fp32, db fp32), each [0] when unwanted.
    grad_e [N, Ct, P] is read through its own strides (an expanded upstream gradient is not copied)."""
    student, teacher = dense(student), dense(teacher)
    config = launch_config(student, weight, bias, grad_e, kind)
    grad_s, grad_t = gradient_buffers(student, teacher, student_grad, teacher_grad)
    if student_grad or teacher_grad:
        no_output = grad_e.new_empty(0, dtype=torch.float32)
        positions_pass(student, teacher, weight, bias, grad_e, no_output, no_output, grad_s, grad_t, 1.0, config)
    grad_w, grad_b = weight_pass(student, teacher, weight, bias, grad_e, 1.0, weight_grad, bias_grad, config)
    return grad_s, grad_t, grad_w, grad_b


@_adapted_grad_op.register_fake
def _adapted_grad_fake(student, teacher, weight, bias, grad_e, kind, student_grad, teacher_grad, weight_grad,
                       bias_grad):  # fmt: skip
    student, teacher = dense(student), dense(teacher)
    return (*gradient_buffers(student, teacher, student_grad, teacher_grad),
            _maybe_fp32_grad(weight, weight_grad),
            _maybe_fp32_grad(bias if bias is not None else weight, bias_grad))  # fmt: skip


def _setup_context(ctx, inputs, output):
    student, teacher, weight, bias, ctx.kind, ctx.reduction = inputs[:6]
    ctx.wanted = inputs[6:]  # student, teacher, weight, bias
    ctx.fused = _fused(ctx.reduction, student, teacher, weight, *ctx.wanted[:3])
    ctx.weight_dtype, ctx.bias_dtype = weight.dtype, None if bias is None else bias.dtype
    only_the_loss_is_differentiable(ctx, *output[1:])
    ctx.save_for_backward(*(output[1:] if ctx.fused else saveable(student, teacher, weight, bias)))


@first_order_only("adapted_feature_match")
def _backward(ctx, grad_loss, *_unused_grads):
    if grad_loss is None:
        return no_gradients(ctx)
    if ctx.fused:
        grads = fused_gradients(ctx, "adapted_feature_match")
        scale_wanted_(grads, ctx.wanted, grad_loss)
    else:
        student, teacher, weight, bias = ctx.saved_tensors
        upstream = upstream_gradient(grad_loss, ctx.reduction, teacher.numel()).expand(teacher.shape)
        grads = _adapted_grad_op(student, teacher, weight, bias, upstream, ctx.kind, *ctx.wanted)
    grad_s, grad_t, grad_w, grad_b = (grad if wanted else None for grad, wanted in zip(grads, ctx.wanted, strict=True))
    grad_w = None if grad_w is None else grad_w.to(ctx.weight_dtype)
    grad_b = None if grad_b is None else grad_b.to(ctx.bias_dtype)
    return (grad_s, grad_t, grad_w, grad_b) + (None,) * (len(ctx.needs_input_grad) - 4)  # the other inputs


_adapted_op.register_autograd(_backward, setup_context=_setup_context)


def _positions_views(student: Tensor, teacher: Tensor) -> tuple[Tensor, Tensor, bool]:
    """[N, C, P] views of both maps; vectors ([N, C], P = 1) become [1, C, N] so that samples fill the tiles."""
    student, teacher = as_channels_positions(student), as_channels_positions(teacher)
    if student.shape[2] == 1 and student.shape[0] > 1:
        return student.permute(2, 1, 0), teacher.permute(2, 1, 0), True
    return student, teacher, False


def adapted_feature_match_ref(
    student: Tensor, teacher: Tensor, weight: Tensor, bias: Tensor | None = None, *, kind: str = "mse",
    reduction: str = "mean",
) -> Tensor:  # fmt: skip
    """Pure-PyTorch specification of `adapted_feature_match` (fp32 or wider accumulation); same arguments, no `impl`."""
    check_adapted_feature_match_options(kind=kind, reduction=reduction)
    check_adapter_inputs(student, teacher, weight, bias)
    dtype = compute_dtype(student, teacher, weight, bias)
    n_student, n_teacher = student.shape[1], teacher.shape[1]
    # y[n, o, ...] = sum_c W[o, c] s[n, c, ...] + b[o]: channels moved last for one matmul, then back.
    matrix = weight.reshape(n_teacher, n_student).to(dtype)
    # Outside autocast, which would run the product in fp16/bf16 (the kernels ignore autocast, as does this spec).
    with torch.autocast(student.device.type, enabled=False):
        adapted = torch.movedim(torch.movedim(student.to(dtype), 1, -1) @ matrix.t(), -1, 1)
    if bias is not None:
        adapted = adapted + bias.to(dtype).reshape(n_teacher, *[1] * (student.dim() - 2))
    diff = adapted - teacher.to(dtype)
    per_element = diff.square() if kind == "mse" else diff.abs()
    return reduce_reference(per_element, reduction)


def adapted_feature_match(
    student: Tensor, teacher: Tensor, weight: Tensor, bias: Tensor | None = None, *, kind: str = "mse",
    reduction: str = "mean", impl: str = "auto",
) -> Tensor:  # fmt: skip
    """Match a student feature map to the teacher's through a 1x1-convolution adapter, without materializing it.

    Per position the adapter maps the student's Cs channels to the teacher's Ct: y = W s + b. Per element
    of the teacher-shaped result e = (y - t)^2 ("mse") or |y - t| ("l1"). Gradients reach the student, the
    weight, the bias and, when it requires grad, the teacher.

    Args:
        student: [N, Cs, *spatial] or [N, Cs] float16/bfloat16/float32 (float64 on the reference path).
            Contiguous and channels_last maps are read in place, without copies.
        teacher: [N, Ct, *spatial] (or [N, Ct]): same batch and spatial sizes and device; any float dtype.
        weight: [Ct, Cs] or a 1x1 conv weight [Ct, Cs, 1, 1] (trailing ones of any count).
        bias: [Ct] or None.
        kind: "mse" or "l1".
        reduction: "mean" (over all N·Ct·positions elements of e), "sum", or "none" (e itself, teacher-shaped).
        impl: "auto" (Triton for CUDA tensors when available, else the reference), "triton", "reference".
            The fused kernels hold Cs <= 1024 student channels when student and weight share the dtype
            float16 or bfloat16, Cs <= 512 with TF32 fp32 products and Cs <= 256 with IEEE ones; wider
            adapters run the reference with "auto" and raise ValueError with "triton". On CUDA, float32
            products use TF32 when torch.backends.cudnn.allow_tf32 is True (torch's default, as an eager 1x1
            conv), else IEEE fp32.

    Returns:
        float32 loss (float64 for float64 inputs), a scalar unless reduction="none". Each gradient has its
        input's dtype.

    On the Triton path gradients are first order: a backward with create_graph=True raises, and so does a
    second backward through the same graph where the forward wrote the gradients (use impl="reference").
    """
    check_adapted_feature_match_options(kind=kind, reduction=reduction, impl=impl)
    check_adapter_inputs(student, teacher, weight, bias)
    n_student, n_teacher = student.shape[1], teacher.shape[1]
    limit = max_student_channels(student.dtype, weight.dtype)
    too_wide = None
    if n_student > limit:
        too_wide = (f"holds at most {limit} student channels in one tile with {student.dtype} student and "
                    f"{weight.dtype} weight, got Cs = {n_student} (student {tuple(student.shape)})")  # fmt: skip
    if not runs_triton(impl, "adapted_feature_match", student, teacher, weight, bias, unsupported=too_wide):
        return adapted_feature_match_ref(student, teacher, weight, bias, kind=kind, reduction=reduction)
    grad_enabled = torch.is_grad_enabled()
    wanted = [x is not None and x.requires_grad and grad_enabled for x in (student, teacher, weight, bias)]
    student_view, teacher_view, permuted = _positions_views(student, teacher)
    bias = bias.contiguous() if bias is not None else None  # the kernels read bias[o] at bias + o
    loss = _adapted_op(student_view, teacher_view, weight.reshape(n_teacher, n_student), bias, kind, reduction,
                       *wanted)[0]  # fmt: skip
    if reduction != "none":
        return loss
    return (loss.permute(2, 1, 0) if permuted else loss).reshape(teacher.shape)
