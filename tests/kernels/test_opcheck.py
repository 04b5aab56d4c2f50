"""torch.library.opcheck on every gankd custom op, with the arguments the public ops really pass it.

The fake implementations are what torch.compile plans with: an output whose shape, strides or dtype differ from
the kernel's (a channels_last gradient, an fp16 gradient computed in the backward) breaks a user's compiled
training step, not eager runs. Each public call below runs forward and backward under a dispatch mode that
records every gankd op it reaches, and each recorded call is checked: its schema (aliasing and mutation as
declared), its autograd registration, and its fake implementation against the real outputs.

opcheck's test_aot_dispatch_dynamic is left out: where the backward rescales the gradient the forward saved, in
place, it fails inside AOTAutograd's partitioner ("Node ... was invalid, but is output"), while
torch.compile(fullgraph=True, dynamic=True) of the public ops, forward and backward, runs and matches the
reference (test_compile_dynamic.py).
"""

from functools import partial

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map

from gankd.kernels import adapted_feature_match, attention_transfer, feature_match, softmax_kl

CHECKS = ("test_schema", "test_autograd_registration", "test_faketensor")


class _RecordGankdOps(TorchDispatchMode):
    """Records (op, args, kwargs) of each gankd custom op dispatched, the tensors copied before the op runs
    (the in-place scaling ops change theirs)."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func.namespace == "gankd":
            copy = tree_map(lambda x: x.detach().clone().requires_grad_(x.requires_grad)
                            if isinstance(x, torch.Tensor) else x, (args, kwargs))  # fmt: skip
            self.calls.append((func, *copy))
        return func(*args, **kwargs)


def _maps(device, dtype=torch.float32, channels=4, channels_last=False):
    maps = torch.randn(2, channels, 3, 5, device=device, dtype=dtype)
    if channels_last:
        maps = maps.contiguous(memory_format=torch.channels_last)
    return maps.requires_grad_()


def _public_calls(device):
    """(name, zero-argument call) of the public ops: each kernel path (fused gradients, gradients computed in the
    backward for fp16 or reduction 'none'), channels_last and contiguous maps, teachers with and without grad."""
    logits = dict(device=device, requires_grad=True)
    weight = dict(device=device, requires_grad=True)
    labels = torch.tensor([1, 2, -100, 3], device=device)
    yield "softmax_kl", partial(softmax_kl, torch.randn(4, 40, **logits), torch.randn(4, 40, **logits), 2.0)
    fp16_logits = torch.randn(4, 40, **logits, dtype=torch.float16)
    yield "softmax_kl fp16 labels", partial(softmax_kl, fp16_logits, torch.randn(4, 40, device=device), 2.0,
                                            labels=labels, ce_weight=0.5)  # fmt: skip
    for kind in ("mse", "cosine"):
        for reduction in ("mean", "none"):
            for dtype in (torch.float32, torch.float16):
                yield f"feature_match {kind} {reduction} {dtype}", partial(
                    feature_match, _maps(device, dtype, channels_last=True), _maps(device), kind=kind,
                    reduction=reduction)  # fmt: skip
    for reduction in ("mean", "none"):
        yield (
            f"attention_transfer {reduction}",
            partial(
                attention_transfer, _maps(device, channels_last=True), _maps(device, channels=6), reduction=reduction
            ),
        )
        yield f"adapted_feature_match {reduction}", partial(
            adapted_feature_match, _maps(device, channels_last=True), _maps(device, channels=6),
            torch.randn(6, 4, **weight), torch.randn(6, **weight), reduction=reduction)  # fmt: skip
    yield "adapted_feature_match fp16", partial(
        adapted_feature_match, _maps(device, torch.float16), _maps(device, channels=6).detach(),
        torch.randn(6, 4, **weight, dtype=torch.float16), None)  # fmt: skip


CALLS = [name for name, _ in _public_calls("cpu")]


@pytest.mark.parametrize("name", CALLS)
def test_every_custom_op_a_public_call_reaches(name, device):
    torch.manual_seed(0)
    call = dict(_public_calls(device))[name]
    recorder = _RecordGankdOps()
    with recorder:
        loss = call(impl="triton")
        upstream = torch.rand(loss.shape, device=device) + 0.5  # not 1: the backward's rescaling runs
        (loss * upstream).sum().backward()
    assert len(recorder.calls) >= 2  # the forward op, and the backward's
    for op, args, kwargs in recorder.calls:
        torch.library.opcheck(op, args, kwargs, test_utils=CHECKS)
