"""Loss modules: nn.Module faces of the fused kernels in gankd.kernels."""

from .adapter import AdaptedFeatureLoss
from .features import AttentionTransferLoss, FeatureMatchLoss
from .kd import KDLoss

__all__ = ["AdaptedFeatureLoss", "AttentionTransferLoss", "FeatureMatchLoss", "KDLoss"]
