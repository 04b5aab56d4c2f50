"""impl= resolution, Triton-less installs, and gankd.kernels standing alone."""

import importlib
import inspect
import os
import subprocess
import sys
import textwrap
import warnings

import pytest
import torch
from compare import ARITHMETIC_OPS, torch_ops_called

from gankd.kernels import (
    _dispatch,
    adapted_feature_match,
    attention_transfer,
    feature_match,
    softmax_kl,
    softmax_kl_ref,
)

softmax_kl_module = importlib.import_module("gankd.kernels.softmax_kl")


def run_python(code: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env=os.environ | env, timeout=300)  # fmt: skip


def test_auto_runs_the_reference_for_cpu_tensors(monkeypatch):
    def must_not_launch(*args, **kwargs):
        raise AssertionError("the Triton kernel was launched for CPU tensors with impl='auto'")

    monkeypatch.setattr(softmax_kl_module, "_softmax_kl_kernel", must_not_launch)
    student, teacher = torch.randn(3, 9), torch.randn(3, 9)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # silently: no warning for CPU tensors
        assert torch.equal(softmax_kl(student, teacher), softmax_kl_ref(student, teacher))


def test_cuda_fallback_warns_once_per_op(monkeypatch):
    monkeypatch.setattr(_dispatch, "HAS_TRITON", False)
    monkeypatch.setattr(_dispatch, "_warned_fallback", set())
    cuda = torch.device("cuda")
    with pytest.warns(UserWarning, match="Triton is not installed"):
        assert _dispatch.use_triton("auto", "some_op", cuda) is False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _dispatch.use_triton("auto", "some_op", cuda) is False
    with pytest.raises(RuntimeError, match=r"some_op\(impl='triton'\) cannot run: Triton is not installed"):
        _dispatch.use_triton("triton", "some_op", cuda)


def test_explicit_triton_on_cpu_without_the_interpreter_says_why():
    result = run_python(
        """
        import torch
        from gankd.kernels import softmax_kl
        try:
            softmax_kl(torch.randn(2, 5), torch.randn(2, 5), impl="triton")
        except RuntimeError as error:
            print(error)
        """,
        TRITON_INTERPRET="0",
    )
    assert "TRITON_INTERPRET=1" in result.stdout, result.stderr


def test_works_without_triton():
    # A meta-path entry of None makes `import triton` raise ImportError, as on a machine without it.
    result = run_python(
        """
        import sys
        sys.modules["triton"] = None
        import torch
        from gankd.kernels import softmax_kl, softmax_kl_ref
        student = torch.randn(4, 7, requires_grad=True)
        loss = softmax_kl(student, torch.randn(4, 7), 2.0)
        loss.backward()
        assert student.grad is not None and torch.isfinite(loss)
        try:
            softmax_kl(student, torch.randn(4, 7), impl="triton")
        except RuntimeError as error:
            print(error)
        """
    )
    assert result.returncode == 0, result.stderr
    assert "Triton is not installed" in result.stdout


def test_kernels_package_stands_alone():
    result = run_python(
        """
        import sys
        import gankd.kernels
        others = sorted(m for m in sys.modules if m.startswith("gankd.") and not m.startswith("gankd.kernels"))
        print(others)
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


OPS = ("softmax_kl", "feature_match", "attention_transfer", "adapted_feature_match")


@pytest.mark.parametrize("op_name", OPS)
def test_reference_and_option_check_take_the_ops_arguments(op_name):
    # `<op>_ref` takes exactly `<op>`'s arguments but `impl`, with the same kinds and defaults, and
    # `check_<op>_options` gives every option it takes the op's default: one contract, written three times.
    kernels = importlib.import_module("gankd.kernels")
    op = inspect.signature(getattr(kernels, op_name)).parameters
    reference = inspect.signature(getattr(kernels, f"{op_name}_ref")).parameters
    check = inspect.signature(getattr(kernels, f"check_{op_name}_options")).parameters
    assert [name for name in op if name != "impl"] == list(reference)
    for name, parameter in reference.items():
        assert (parameter.kind, parameter.default) == (op[name].kind, op[name].default), name
    assert set(check) <= set(op)
    for name, parameter in check.items():
        assert parameter.default == op[name].default, name


FUSED_LOSSES = {
    "softmax_kl": lambda d: softmax_kl(torch.randn(8, 50, device=d, requires_grad=True), torch.randn(8, 50, device=d),
                                       2.0, impl="triton"),
    "feature_match": lambda d: feature_match(torch.randn(2, 4, 3, 3, device=d, requires_grad=True),
                                             torch.randn(2, 4, 3, 3, device=d), impl="triton"),
    "feature_match cosine": lambda d: feature_match(torch.randn(2, 4, 3, 3, device=d, requires_grad=True),
                                                    torch.randn(2, 4, 3, 3, device=d), kind="cosine", impl="triton"),
    "adapted_feature_match": lambda d: adapted_feature_match(
        torch.randn(2, 4, 3, 3, device=d, requires_grad=True), torch.randn(2, 6, 3, 3, device=d),
        torch.randn(6, 4, 1, 1, device=d, requires_grad=True), impl="triton"),
}  # fmt: skip


@pytest.mark.parametrize("op", FUSED_LOSSES)
def test_backward_fills_no_zero_gradients_for_the_saved_buffers(op, device):
    # Autograd fills the absent incoming gradient of every other output with zeros unless told not to: for the
    # saved gradient buffers that was a memset of a whole gradient per backward (on the CPU with the launches
    # stubbed, a softmax_kl forward+backward at 256 x 1000 went from 1.0 ms to 0.27 ms without it).
    loss = FUSED_LOSSES[op](device)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        loss.backward()
    assert not [event.name for event in profile.events() if event.name in ("aten::zeros", "aten::zero_")]


@pytest.mark.parametrize("op", FUSED_LOSSES)
def test_forward_is_the_kernel_and_one_sum(op, device):
    # Each kernel scales its partial sums by the reduction's factor (1 / count for a mean): the forward adds one
    # sum (and the adapter's dW partials one more), no tensor of the factor, no division, no multiply.
    torch.manual_seed(0)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        FUSED_LOSSES[op](device)
    names = torch_ops_called(profile)
    assert not [name for name in names if name in ARITHMETIC_OPS]
    assert names.count("aten::sum") == (2 if op == "adapted_feature_match" else 1)


class _NoGradient(torch.autograd.Function):
    """The identity, whose backward returns None: the graph below it then gets no gradient."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return None


def _leaves(node) -> list[torch.Tensor]:
    """The tensors whose gradients accumulate below autograd node `node`."""
    if node is None:
        return []
    if hasattr(node, "variable"):
        return [node.variable]
    return [leaf for child, _ in node.next_functions for leaf in _leaves(child)]


@pytest.mark.parametrize("op", FUSED_LOSSES)
def test_backward_takes_a_loss_that_gets_no_gradient(op, device):
    # With zero-filling off (above) autograd passes None on to the fused op when every path from its loss
    # returns None; the op's backward must then give None for its inputs instead of scaling by None.
    loss = FUSED_LOSSES[op](device)
    leaves = _leaves(loss.grad_fn)
    anchor = torch.ones((), device=device, requires_grad=True)
    (_NoGradient.apply(loss).sum() + anchor).backward()
    assert anchor.grad is not None
    assert leaves and all(leaf.grad is None for leaf in leaves)


# Also the backwards that read the inputs again (fp16 gradients) and attention_transfer's.
FIRST_ORDER_LOSSES = FUSED_LOSSES | {
    "softmax_kl fp16": lambda d: softmax_kl(torch.randn(8, 50, device=d, dtype=torch.float16, requires_grad=True),
                                            torch.randn(8, 50, device=d), 2.0, impl="triton"),
    "attention_transfer": lambda d: attention_transfer(torch.randn(2, 4, 3, 3, device=d, requires_grad=True),
                                                       torch.randn(2, 5, 3, 3, device=d), impl="triton"),
}  # fmt: skip


@pytest.mark.parametrize("op", FIRST_ORDER_LOSSES)
def test_a_graph_of_the_gradients_is_refused(op, device):
    # The kernels' gradients have no derivative of their own: a gradient penalty or double backward through
    # them would silently miss this op's share, so create_graph=True says so instead; first order is unchanged.
    torch.manual_seed(0)
    loss = FIRST_ORDER_LOSSES[op](device)
    leaves = _leaves(loss.grad_fn)
    with pytest.raises(RuntimeError, match=r"has no second-order gradients.*create_graph=True.*impl='reference'"):
        torch.autograd.grad(loss, leaves, create_graph=True)
    loss = FIRST_ORDER_LOSSES[op](device)
    assert all(gradient is not None for gradient in torch.autograd.grad(loss, _leaves(loss.grad_fn)))
