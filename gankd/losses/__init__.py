"""Loss modules: nn.Module faces of the fused kernels in gankd.kernels, the GAN losses, and LPIPS."""

from .adapter import AdaptedFeatureLoss
from .adversarial import GAN_MODES, GANLoss
from .features import AttentionTransferLoss, FeatureMatchLoss
from .kd import KDLoss
from .perceptual import LPIPSLoss

__all__ = [
    "GAN_MODES",
    "AdaptedFeatureLoss",
    "AttentionTransferLoss",
    "FeatureMatchLoss",
    "GANLoss",
    "KDLoss",
    "LPIPSLoss",
]
