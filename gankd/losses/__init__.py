"""Loss modules: nn.Module faces of the fused kernels in gankd.kernels."""

from .features import AttentionTransferLoss, FeatureMatchLoss
from .kd import KDLoss

__all__ = ["AttentionTransferLoss", "FeatureMatchLoss", "KDLoss"]
