"""torch.compile(fullgraph=True, dynamic=True) traces every fused op once for two shapes, in fp32 and fp16.

Dynamic shapes are what torch.compile turns to by itself once a second batch shape arrives (the short last
batch of an epoch), so a host-side step that cannot take symbolic sizes or floats breaks a user's compiled
training step: sorting symbolic strides (the layout check) and math.isfinite of a float option did.
"""

import pytest
import torch
import torch._dynamo.testing
from compare import FP16_LOSS_SCALE, loss_and_grads, relative_error

from gankd.kernels import (
    adapted_feature_match,
    adapted_feature_match_ref,
    attention_transfer,
    attention_transfer_ref,
    feature_match,
    feature_match_ref,
    softmax_kl,
    softmax_kl_ref,
)

# (fused op, its reference, the inputs' shapes at two sizes, keyword options). No size repeats within a shape
# list, so torch's duck sizing adds no equality to break at the second size.
MAPS = [[(2, 4, 6, 10)] * 2, [(3, 4, 7, 9)] * 2]
ADAPTED_MAPS = [[(2, 4, 6, 10), (2, 5, 6, 10)], [(3, 4, 7, 9), (3, 5, 7, 9)]]
CASES = {
    "softmax_kl": (softmax_kl, softmax_kl_ref, [[(8, 50)] * 2, [(12, 70)] * 2], dict(temperature=2.0)),
    "feature_match": (feature_match, feature_match_ref, MAPS, {}),
    "feature_match cosine": (feature_match, feature_match_ref, MAPS, dict(kind="cosine")),
    "attention_transfer": (attention_transfer, attention_transfer_ref, ADAPTED_MAPS, {}),
    "adapted_feature_match": (adapted_feature_match, adapted_feature_match_ref,
                              [shapes + [(5, 4, 1, 1)] for shapes in ADAPTED_MAPS], {}),
}  # fmt: skip
TOLERANCE = {torch.float32: 1e-5, torch.float16: 2e-3}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("case", CASES)
def test_fullgraph_with_dynamic_shapes(case, dtype, device):
    op, reference, shapes_at_two_sizes, options = CASES[case]

    def call(*tensors):
        return op(*tensors, impl="triton", **options)

    torch._dynamo.reset()  # every case compiles the same `call` code: no recompile limit across cases
    counter = torch._dynamo.testing.CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(call, fullgraph=True, dynamic=True, backend=counter)
    upstream = torch.tensor(FP16_LOSS_SCALE if dtype == torch.float16 else 1.0, device=device)
    torch.manual_seed(3)
    frames = []
    for shapes in shapes_at_two_sizes:
        tensors = [torch.randn(shape, device=device).to(dtype).requires_grad_() for shape in shapes]
        inputs = {f"x{number}": tensor for number, tensor in enumerate(tensors)}
        got_loss, got = loss_and_grads(lambda **x: compiled(*x.values()), inputs, upstream)
        want_loss, want = loss_and_grads(lambda **x: reference(*x.values(), **options), inputs, upstream)
        assert torch.allclose(got_loss, want_loss.float(), rtol=1e-5, atol=1e-6), shapes
        for name in inputs:
            assert relative_error(got[name], want[name]) <= TOLERANCE[dtype], (shapes, name)
        frames.append(counter.frame_count)
    assert frames[0] == frames[1]  # the second size reused the first graph: nothing guards on a size
