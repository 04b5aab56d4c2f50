"""AdaptedFeatureLoss: the nn.Module face of gankd.kernels.adapted_feature_match, owning the 1x1 adapter."""

import math

import torch
from torch import Tensor, nn

from gankd.kernels import adapted_feature_match, check_adapted_feature_match_options


class AdaptedFeatureLoss(nn.Module):
    """Feature-map distillation through a learned 1x1-convolution adapter (student channels -> teacher channels).

    Holds the adapter weight [Ct, Cs, 1, 1] and bias [Ct], initialised exactly as `nn.Conv2d(Cs, Ct, 1)`
    initialises its own, and the options of `gankd.kernels.adapted_feature_match` (see it for the math).
    `forward(student, teacher)` takes student [N, Cs, *spatial] (or [N, Cs]) and teacher [N, Ct, *spatial]
    and returns the float32 loss; the adapter never materializes its output on the fused path.
    """

    def __init__(
        self,
        student_channels: int,
        teacher_channels: int,
        *,
        bias: bool = True,
        kind: str = "mse",
        reduction: str = "mean",
        impl: str = "auto",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ):
        super().__init__()
        for name, value in (("student_channels", student_channels), ("teacher_channels", teacher_channels)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        check_adapted_feature_match_options(kind=kind, reduction=reduction, impl=impl)
        self.student_channels, self.teacher_channels = student_channels, teacher_channels
        self.options = dict(kind=kind, reduction=reduction, impl=impl)
        factory = dict(device=device, dtype=dtype)
        self.weight = nn.Parameter(torch.empty(teacher_channels, student_channels, 1, 1, **factory))
        self.bias = nn.Parameter(torch.empty(teacher_channels, **factory)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # As nn.Conv2d.reset_parameters: kaiming-uniform weight (a = sqrt(5)), bias uniform in +-1/sqrt(fan_in).
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.student_channels)
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, student: Tensor, teacher: Tensor) -> Tensor:
        return adapted_feature_match(student, teacher, self.weight, self.bias, **self.options)

    def extra_repr(self) -> str:
        options = ", ".join(f"{name}={value!r}" for name, value in self.options.items())
        return f"{self.student_channels}, {self.teacher_channels}, bias={self.bias is not None}, {options}"
