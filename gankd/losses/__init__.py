"""Loss modules: nn.Module faces of the fused kernels in gankd.kernels."""

from .adapter import AdaptedFeatureLoss
from .kd import KDLoss

__all__ = ["AdaptedFeatureLoss", "KDLoss"]
