"""gankd.losses: module faces of the fused kernels."""

import pytest
import torch

from gankd.kernels import attention_transfer_ref, feature_match_ref, softmax_kl_ref
from gankd.losses import AttentionTransferLoss, FeatureMatchLoss, KDLoss


def test_kd_loss_matches_the_function_with_the_same_options():
    torch.manual_seed(0)
    student = torch.randn(6, 10, requires_grad=True)
    teacher = torch.randn(6, 10)
    labels = torch.tensor([1, 2, -1, 4, 5, 9])
    criterion = KDLoss(3.0, direction="jsd", beta=0.3, ce_weight=0.5, kd_weight=2.0, ignore_index=-1)
    loss = criterion(student, teacher, labels)
    expected = softmax_kl_ref(student, teacher, 3.0, direction="jsd", beta=0.3, ce_weight=0.5, kd_weight=2.0,
                              ignore_index=-1, labels=labels)  # fmt: skip
    assert torch.allclose(loss, expected)
    loss.backward()
    assert student.grad is not None and torch.all(student.grad[2] == 0)
    assert "direction='jsd'" in repr(criterion)


@pytest.mark.parametrize(
    "options, error, message",
    [
        (dict(temperature=0.0), ValueError, "temperature"),
        (dict(direction="sideways"), ValueError, "direction"),
        (dict(direction="jsd", beta=2.0), ValueError, "beta"),
        (dict(reduction="mean"), ValueError, "reduction"),
        (dict(impl="fast"), ValueError, "impl"),
    ],
)
def test_kd_loss_rejects_bad_options_at_construction(options, error, message):
    with pytest.raises(error, match=message):
        KDLoss(**options)


def test_feature_modules_match_their_functions():
    torch.manual_seed(1)
    student = torch.randn(2, 4, 5, 5, requires_grad=True)
    teacher = torch.randn(2, 4, 5, 5)
    assert torch.equal(FeatureMatchLoss("cosine")(student, teacher), feature_match_ref(student, teacher, kind="cosine"))
    wide_teacher = torch.randn(2, 9, 5, 5)
    attention = AttentionTransferLoss(p=1.5, reduction="sum")
    assert torch.allclose(attention(student, wide_teacher),
                          attention_transfer_ref(student, wide_teacher, p=1.5, reduction="sum"))  # fmt: skip
    attention(student, wide_teacher).backward()
    assert student.grad is not None
    assert "kind='cosine'" in repr(FeatureMatchLoss("cosine")) and "p=1.5" in repr(attention)


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: FeatureMatchLoss("huber"), "kind"),
        (lambda: FeatureMatchLoss(reduction="batchmean"), "reduction"),
        (lambda: FeatureMatchLoss(impl="cuda"), "impl"),
        (lambda: AttentionTransferLoss(p=0), "p must be"),
        (lambda: AttentionTransferLoss(p=float("inf")), "p must be"),
        (lambda: AttentionTransferLoss(reduction="avg"), "reduction"),
    ],
)
def test_feature_modules_reject_bad_options(build, message):
    with pytest.raises(ValueError, match=message):
        build()
