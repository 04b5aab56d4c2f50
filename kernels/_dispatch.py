"""Which implementation runs: Triton availability, the interpreter, and `impl=` resolution.

Every fused op in gankd.kernels resolves its `impl` argument here:
- "auto": the Triton kernel for CUDA tensors when Triton imports; the reference otherwise — silently for
  CPU tensors, with one warning per op (not per call) when CUDA tensors have to fall back.
- "triton": always the kernel, or a RuntimeError that says why it cannot run.
- "reference": the plain-PyTorch specification.
"""

import functools
import os
import warnings

import torch

from ._checks import check_choice

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only installs and platforms without Triton: the reference path still works
    triton = None
    tl = None

HAS_TRITON = triton is not None
# Triton chooses the interpreter when a kernel is decorated, so the variable is read once, at import.
TRITON_INTERPRET = HAS_TRITON and os.environ.get("TRITON_INTERPRET", "0") == "1"

IMPLS = ("auto", "triton", "reference")

_warned_fallback: set[str] = set()


class _MissingTriton:
    """Stands in for `triton` and `triton.language` so kernel modules load without Triton.

    Kernels decorated with the stand-in `jit` raise when launched; dispatch never launches them.
    """

    constexpr = None  # used only as an annotation in kernel signatures

    @staticmethod
    def jit(fn=None, **_options):
        def decorate(kernel_fn):
            return _UnavailableKernel(kernel_fn.__name__)

        return decorate(fn) if fn is not None else decorate


class _UnavailableKernel:
    def __init__(self, name: str):
        self.name = name

    def __getitem__(self, _grid):
        raise RuntimeError(f"Triton kernel {self.name} cannot launch: Triton is not installed")

    def __call__(self, *_args, **_kwargs):
        raise RuntimeError(f"Triton kernel {self.name} cannot run: Triton is not installed")


if triton is None:
    triton = tl = _MissingTriton()


def triton_unavailable_reason(device: torch.device) -> str | None:
    """Why the Triton path cannot run on `device`, or None when it can."""
    if not HAS_TRITON:
        return "Triton is not installed (it ships with torch's Linux CUDA wheels, or `pip install triton`)"
    if device.type == "cuda":
        return None
    if device.type == "cpu":
        if TRITON_INTERPRET:
            return None
        return (
            "the tensors are on the CPU; Triton kernels run on CUDA devices, or on the CPU under the Triton "
            "interpreter (set TRITON_INTERPRET=1 before triton is first imported)"
        )
    return f"gankd's Triton kernels support CUDA devices (and the CPU interpreter), got device {device}"


def use_triton(impl: str, op_name: str, device: torch.device) -> bool:
    """Resolve `impl` for tensors on `device`: True runs the Triton kernel, False the reference."""
    check_choice("impl", impl, IMPLS)
    if impl == "reference":
        return False
    reason = triton_unavailable_reason(device)
    if impl == "triton":
        if reason is not None:
            raise RuntimeError(f"{op_name}(impl='triton') cannot run: {reason}")
        return True
    if device.type != "cuda":
        return False
    if reason is not None:
        if op_name not in _warned_fallback:
            _warned_fallback.add(op_name)
            warnings.warn(f"{op_name}: using the reference path for CUDA tensors because {reason}", stacklevel=3)
        return False
    return True


def runs_triton(impl: str, op_name: str, *tensors: torch.Tensor | None, unsupported: str | None = None) -> bool:
    """Whether `op_name` runs its Triton kernel on `tensors` (None entries are skipped), the guard every
    dispatcher shares: float64 tensors (the kernels compute in float32) and `unsupported` (why the kernel
    cannot take these inputs, e.g. too many channels) send impl="auto" to the reference and make
    impl="triton" raise saying so; empty tensors take the reference; the rest is `use_triton`."""
    check_choice("impl", impl, IMPLS)
    present = [tensor for tensor in tensors if tensor is not None]
    if any(tensor.dtype == torch.float64 for tensor in present):
        if impl == "triton":
            raise TypeError(f"{op_name}(impl='triton') computes in float32; float64 inputs run with impl='reference'")
        return False
    if unsupported is not None:
        if impl == "triton":
            raise ValueError(f"{op_name}(impl='triton') {unsupported}; impl='auto' runs the reference for these")
        return False
    return use_triton(impl, op_name, present[0].device) and all(tensor.numel() > 0 for tensor in present)


def only_the_loss_is_differentiable(ctx, *buffers: torch.Tensor) -> None:
    """In a fused op's setup_context: its other outputs (the gradients its forward saves, statistics) are marked
    non-differentiable, and autograd is told to leave their incoming gradients as None. It would otherwise
    fill each with zeros before every backward: a memset of a whole gradient, as many bytes as the
    gradient's own write."""
    ctx.mark_non_differentiable(*buffers)
    ctx.set_materialize_grads(False)


def saveable(*tensors: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:
    """`tensors` as a fused op's setup_context may save them for backward: an inference tensor (a teacher's
    features computed under torch.inference_mode) is copied, since autograd refuses to save one."""
    return tuple(x.clone() if x is not None and x.is_inference() else x for x in tensors)


def rounds_to_fp16(*rounded: tuple[torch.Tensor, bool]) -> bool:
    """Whether a wanted gradient would be rounded to fp16: `rounded` holds (tensor, wanted) pairs. The fused ops
    then compute it in the backward from the upstream gradient, rounding upstream x slope once, as torch does,
    instead of writing it in the forward for an upstream gradient of 1 (which fp16's range cannot hold)."""
    return any(wanted and x.dtype == torch.float16 for x, wanted in rounded)


def no_gradients(ctx) -> tuple[None, ...]:
    """A fused op's backward when its loss got no upstream gradient (None: every path from it to the graph's root
    returned None, which autograd passes on once `only_the_loss_is_differentiable` stopped it filling zeros)."""
    return (None,) * len(ctx.needs_input_grad)


def first_order_only(op_name: str):
    """Decorates a fused op's backward: the kernels compute first-order gradients only, so a backward that
    would record a graph of them (create_graph=True, e.g. for a gradient penalty or double backward) raises,
    rather than return gradients whose own derivative would silently miss this op's share."""

    def decorate(backward):
        @functools.wraps(backward)
        def wrapped(ctx, *grads):
            wanted = any(grad is not None for grad in grads)
            if wanted and torch.is_grad_enabled() and not torch.compiler.is_compiling():
                raise RuntimeError(
                    f"{op_name}(impl='triton') has no second-order gradients, and this backward records a graph of "
                    "its gradients (create_graph=True): use impl='reference' there"
                )
            return backward(ctx, *grads)

        return wrapped

    return decorate


def fused_gradients(ctx, op_name: str) -> tuple[torch.Tensor, ...]:
    """The gradients a fused op's forward saved, for its backward to rescale in place: once. A second backward
    through the same graph (retain_graph=True) would find them scaled already; it is refused by name here
    rather than by autograd's version check on the saved buffers, whose message speaks of an in-place op."""
    if getattr(ctx, "gradients_taken", False):
        raise RuntimeError(
            f"{op_name}(impl='triton') writes its gradients in the forward and scales them in place in the "
            "backward, so each forward backpropagates once: for a second backward through the same graph "
            "(retain_graph=True), use impl='reference'"
        )
    ctx.gradients_taken = True
    return ctx.saved_tensors
