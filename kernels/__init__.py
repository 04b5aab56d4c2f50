"""gankd.kernels — fused distillation losses (Triton) with their pure-PyTorch reference twins.

Depends on torch, and on Triton when present; never on the rest of gankd, so other trainers can
`from gankd.kernels import softmax_kl` alone.
"""

from ._adapter_args import check_adapted_feature_match_options
from ._dispatch import IMPLS
from .adapted_feature_match import adapted_feature_match, adapted_feature_match_ref
from .attention_transfer import attention_transfer, attention_transfer_ref, check_attention_transfer_options
from .feature_match import check_feature_match_options, feature_match, feature_match_ref
from .softmax_kl import check_softmax_kl_options, softmax_kl, softmax_kl_ref

__all__ = [
    "IMPLS",
    "adapted_feature_match",
    "adapted_feature_match_ref",
    "attention_transfer",
    "attention_transfer_ref",
    "check_adapted_feature_match_options",
    "check_attention_transfer_options",
    "check_feature_match_options",
    "check_softmax_kl_options",
    "feature_match",
    "feature_match_ref",
    "softmax_kl",
    "softmax_kl_ref",
]
