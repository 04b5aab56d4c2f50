"""Loss modules: nn.Module faces of the fused kernels in gankd.kernels, and the GAN losses."""

from .adversarial import GAN_MODES, GANLoss
from .features import AttentionTransferLoss, FeatureMatchLoss
from .kd import KDLoss

__all__ = ["GAN_MODES", "AttentionTransferLoss", "FeatureMatchLoss", "GANLoss", "KDLoss"]
