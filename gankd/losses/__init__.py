"""Loss modules: nn.Module faces of the fused kernels in gankd.kernels."""

from .kd import KDLoss

__all__ = ["KDLoss"]
