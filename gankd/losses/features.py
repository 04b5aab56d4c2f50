"""nn.Module faces of the feature-map losses in gankd.kernels: FeatureMatchLoss and AttentionTransferLoss."""

import math

from torch import Tensor, nn

from gankd.kernels import IMPLS, attention_transfer, feature_match
from gankd.kernels.feature_match import KINDS
from gankd.options import check_choice

_REDUCTIONS = ("mean", "sum", "none")


class FeatureMatchLoss(nn.Module):
    """Feature-map matching (mse, l1, smooth_l1 or cosine along channels); see gankd.kernels.feature_match.

    `forward(student, teacher)` takes maps of equal shape [N, C, *spatial] and returns the float32 loss.
    """

    def __init__(self, kind: str = "mse", *, reduction: str = "mean", impl: str = "auto"):
        super().__init__()
        check_choice("kind", kind, KINDS)
        check_choice("reduction", reduction, _REDUCTIONS)
        check_choice("impl", impl, IMPLS)
        self.kind, self.reduction, self.impl = kind, reduction, impl

    def forward(self, student: Tensor, teacher: Tensor) -> Tensor:
        return feature_match(student, teacher, kind=self.kind, reduction=self.reduction, impl=self.impl)

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, reduction={self.reduction!r}, impl={self.impl!r}"


class AttentionTransferLoss(nn.Module):
    """Attention transfer (Zagoruyko & Komodakis); see gankd.kernels.attention_transfer.

    `forward(student, teacher)` takes maps with equal batch and spatial sizes (channels may differ).
    """

    def __init__(self, p: float = 2.0, *, reduction: str = "mean", impl: str = "auto"):
        super().__init__()
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not math.isfinite(p) or p <= 0:
            raise ValueError(f"p must be a finite number > 0, got {p!r}")
        check_choice("reduction", reduction, _REDUCTIONS)
        check_choice("impl", impl, IMPLS)
        self.p, self.reduction, self.impl = float(p), reduction, impl

    def forward(self, student: Tensor, teacher: Tensor) -> Tensor:
        return attention_transfer(student, teacher, p=self.p, reduction=self.reduction, impl=self.impl)

    def extra_repr(self) -> str:
        return f"p={self.p}, reduction={self.reduction!r}, impl={self.impl!r}"
