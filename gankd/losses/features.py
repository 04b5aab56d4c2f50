"""nn.Module faces of the feature-map losses in gankd.kernels: FeatureMatchLoss and AttentionTransferLoss."""

from torch import Tensor, nn

from gankd.kernels import (
    attention_transfer,
    check_attention_transfer_options,
    check_feature_match_options,
    feature_match,
)


class FeatureMatchLoss(nn.Module):
    """Feature-map matching (mse, l1, smooth_l1 or cosine along channels); see gankd.kernels.feature_match.

    `forward(student, teacher)` takes maps of equal shape [N, C, *spatial] and returns the float32 loss.
    """

    def __init__(self, kind: str = "mse", *, reduction: str = "mean", impl: str = "auto"):
        super().__init__()
        check_feature_match_options(kind, reduction=reduction, impl=impl)
        self.kind, self.reduction, self.impl = kind, reduction, impl

    def forward(self, student: Tensor, teacher: Tensor) -> Tensor:
        return feature_match(student, teacher, kind=self.kind, reduction=self.reduction, impl=self.impl)

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, reduction={self.reduction!r}, impl={self.impl!r}"


class AttentionTransferLoss(nn.Module):
    """Attention transfer (Zagoruyko & Komodakis); see gankd.kernels.attention_transfer.

    `forward(student, teacher)` takes maps with equal batch and spatial sizes (channels may differ) and more
    than one spatial position.
    """

    def __init__(self, p: float = 2.0, *, reduction: str = "mean", impl: str = "auto"):
        super().__init__()
        self.p = check_attention_transfer_options(p, reduction=reduction, impl=impl)
        self.reduction, self.impl = reduction, impl

    def forward(self, student: Tensor, teacher: Tensor) -> Tensor:
        return attention_transfer(student, teacher, p=self.p, reduction=self.reduction, impl=self.impl)

    def extra_repr(self) -> str:
        return f"p={self.p}, reduction={self.reduction!r}, impl={self.impl!r}"
