"""softmax_kl_ref as a specification: gradcheck, agreement with torch's kl_div and cross_entropy, bad input."""

import re

import pytest
import torch
import torch.nn.functional as F

from gankd.kernels import softmax_kl, softmax_kl_ref


@pytest.mark.parametrize("direction", ["forward", "reverse", "jsd"])
@pytest.mark.parametrize("reduction", ["batchmean", "none"])
def test_reference_gradcheck_float64(direction, reduction):
    torch.manual_seed(0)
    student = torch.randn(4, 7, dtype=torch.float64, requires_grad=True)
    teacher = torch.randn(4, 7, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([2, -100, 6, 0])

    def loss(s, t):
        return softmax_kl_ref(s, t, 1.7, direction=direction, beta=0.4, labels=labels, ce_weight=0.3,
                              reduction=reduction)  # fmt: skip

    assert torch.autograd.gradcheck(loss, (student, teacher))


@pytest.mark.parametrize("impl", ["reference", "triton"])
@pytest.mark.parametrize("reduction", ["batchmean", "sum"])
def test_forward_kl_agrees_with_torch_kl_div(impl, reduction, device):
    torch.manual_seed(1)
    student = torch.randn(6, 33, device=device)
    teacher = torch.randn(6, 33, device=device)
    expected = F.kl_div(F.log_softmax(student, -1), F.log_softmax(teacher, -1), reduction=reduction, log_target=True)
    ours = softmax_kl(student, teacher, reduction=reduction, impl=impl)
    assert torch.allclose(ours, expected, rtol=1e-5, atol=1e-7)
    # Temperature with T^2 scaling: T^2 * kl_div of the tempered distributions.
    tempered = F.kl_div(F.log_softmax(student / 4, -1), F.log_softmax(teacher / 4, -1), reduction=reduction,
                        log_target=True)  # fmt: skip
    assert torch.allclose(softmax_kl(student, teacher, 4.0, reduction=reduction, impl=impl), 16 * tempered, rtol=1e-5)


@pytest.mark.parametrize("impl", ["reference", "triton"])
def test_cross_entropy_term_agrees_with_torch(impl, device):
    torch.manual_seed(2)
    student = torch.randn(9, 12, device=device)
    labels = torch.tensor([0, 11, -100, 3, 3, -100, 7, 1, 2], device=device)
    ours = softmax_kl(
        student, torch.randn(9, 12, device=device), 3.0, labels=labels, kd_weight=0.0, ce_weight=1.0, impl=impl
    )
    expected = F.cross_entropy(student, labels, ignore_index=-100)  # mean over non-ignored rows
    assert torch.allclose(ours, expected, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.int8, torch.uint8, torch.int16, torch.int32])
@pytest.mark.parametrize("impl", ["reference", "triton"])
def test_labels_of_every_integer_dtype(impl, dtype, device):
    # Narrow integer labels (a uint8 segmentation map's classes) give what int64 labels give, CE included.
    torch.manual_seed(2)
    student, teacher = torch.randn(4, 30, device=device), torch.randn(4, 30, device=device)
    labels = torch.tensor([1, 2, 29, 4], device=device)
    options = dict(labels=labels, ce_weight=0.5, ignore_index=29)
    expected = softmax_kl(student, teacher, 2.0, **options, impl="reference")
    options["labels"] = labels.to(dtype)
    assert torch.allclose(softmax_kl(student, teacher, 2.0, **options, impl=impl), expected)


@pytest.mark.parametrize("impl", ["reference", "triton"])
def test_beta_is_read_by_jsd_only(impl, device):
    # Other directions ignore beta, whatever number it is (0 and 1 included: math.log(0) must not run for them).
    logits, other = torch.randn(3, 8, device=device), torch.randn(3, 8, device=device)
    expected = softmax_kl(logits, other, impl=impl)
    for beta in (0.0, 1.0, 2.5):
        assert torch.equal(softmax_kl(logits, other, beta=beta, impl=impl), expected)


def test_reverse_is_forward_with_roles_swapped():
    torch.manual_seed(3)
    student, teacher = torch.randn(5, 20), torch.randn(5, 20)
    swapped = softmax_kl_ref(teacher, student, 2.0, direction="forward")
    assert torch.allclose(softmax_kl_ref(student, teacher, 2.0, direction="reverse"), swapped, rtol=1e-6)


def test_jsd_is_symmetric_at_half_and_bounded():
    torch.manual_seed(4)
    student, teacher = torch.randn(5, 20) * 5, torch.randn(5, 20) * 5
    one_way = softmax_kl_ref(student, teacher, direction="jsd", reduction="none")
    other_way = softmax_kl_ref(teacher, student, direction="jsd", reduction="none")
    assert torch.allclose(one_way, other_way, rtol=1e-5)
    assert torch.all(one_way >= 0) and torch.all(one_way <= torch.log(torch.tensor(2.0)) + 1e-6)


def test_empty_batch():
    student = torch.randn(0, 10, requires_grad=True)
    assert softmax_kl(student, torch.randn(0, 10)).item() == 0.0
    assert softmax_kl(student, torch.randn(0, 10), reduction="none").shape == (0,)


LOGITS = torch.randn(4, 10)
BAD_INPUTS = [
    # (arguments, exception, words the message must contain)
    (dict(teacher_logits=torch.randn(4, 11)), ValueError, "same shape"),
    (dict(student_logits=torch.randint(0, 5, (4, 10))), TypeError, "student_logits must be float16"),
    (dict(teacher_logits=torch.randn(4, 10, dtype=torch.complex64)), TypeError, "teacher_logits"),
    (dict(student_logits=[1.0, 2.0]), TypeError, "student_logits must be a torch.Tensor"),
    (dict(temperature=0.0), ValueError, "temperature must be > 0"),
    (dict(temperature=-2.0), ValueError, "temperature must be > 0"),
    (dict(temperature=float("nan")), ValueError, "temperature must be finite"),
    (dict(temperature=float("inf")), ValueError, "temperature must be finite"),
    (dict(temperature=torch.tensor(2.0)), TypeError, "temperature must be a Python number"),
    (dict(temperature="2"), TypeError, "temperature must be a real number"),
    (dict(direction="backward"), ValueError, "direction must be one of"),
    (dict(reduction="mean"), ValueError, "reduction must be one of"),
    (dict(impl="cuda"), ValueError, "impl must be one of"),
    (dict(direction="jsd", beta=0.0), ValueError, "beta must lie in (0, 1)"),
    (dict(direction="jsd", beta=1.0), ValueError, "beta must lie in (0, 1)"),
    (dict(direction="jsd", beta=1.5), ValueError, "beta must lie in (0, 1)"),
    (dict(labels=torch.zeros(4, 1, dtype=torch.long)), ValueError, "labels must have the logits' leading shape"),
    (dict(labels=torch.zeros(3, dtype=torch.long)), ValueError, "labels must have the logits' leading shape"),
    (dict(labels=torch.zeros(4)), TypeError, "labels must have an integer dtype"),
    (dict(labels=torch.zeros(4, dtype=torch.bool)), TypeError, "labels must have an integer dtype"),
    (dict(labels=[0, 1, 2, 3]), TypeError, "labels must be a torch.Tensor or None, got list"),
    (dict(labels=torch.tensor([0, 1, 10, 2])), ValueError, "labels must lie in [0, 10)"),
    (dict(labels=torch.tensor([0, -1, 2, 2])), ValueError, "got -1"),
    (dict(ce_weight=1.0), ValueError, "ce_weight=1.0 needs labels"),
    (dict(kd_weight=float("nan")), ValueError, "kd_weight must be finite"),
    (dict(ignore_index=1.5), TypeError, "ignore_index must be an int"),
    (dict(ignore_index=2**70), ValueError, "ignore_index must fit in int64"),
    (dict(beta="0.5"), TypeError, "beta must be a real number"),
    (dict(t2_scale="no"), TypeError, "t2_scale must be True or False, got 'no'"),
    (dict(student_logits=torch.randn(4, 0), teacher_logits=torch.randn(4, 0)), ValueError, "non-empty class"),
    (dict(student_logits=torch.tensor(1.0), teacher_logits=torch.tensor(1.0)), ValueError, "non-empty class"),
    (dict(student_logits=LOGITS.to("meta")), ValueError, "same device"),
]


@pytest.mark.parametrize("impl", ["reference", "triton"])
@pytest.mark.parametrize("arguments, error, message", BAD_INPUTS, ids=lambda v: None)
def test_bad_input_is_named(arguments, error, message, impl, device):
    if device.type == "cuda" and message in ("labels must lie in [0, 10)", "got -1"):
        pytest.skip("label values are checked on CPU tensors only: on a GPU the check would need a host sync")
    call = dict(student_logits=LOGITS, teacher_logits=LOGITS.clone()) | arguments
    # On the test device (a GPU's, where the kernels run compiled): checks that read the data run there.
    call = {key: value.to(device) if isinstance(value, torch.Tensor) and value.device.type == "cpu" else value
            for key, value in call.items()}  # fmt: skip
    if impl == "reference" and "impl" not in arguments:
        function = softmax_kl_ref
    else:
        call.setdefault("impl", "triton")
        function = softmax_kl
    with pytest.raises(error, match=re.escape(message)):
        function(**call)


def test_float64_runs_on_the_reference_path_only():
    logits = torch.randn(3, 5, dtype=torch.float64)
    assert softmax_kl(logits, logits.flip(-1)).dtype == torch.float64
    with pytest.raises(TypeError, match="float64 inputs run with impl='reference'"):
        softmax_kl(logits, logits, impl="triton")
