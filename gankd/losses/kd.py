"""KDLoss: the nn.Module face of gankd.kernels.softmax_kl."""

from torch import Tensor, nn

from gankd.kernels import check_softmax_kl_options, softmax_kl


class KDLoss(nn.Module):
    """Logit distillation loss (Hinton KD, reverse KL or JSD), optionally fused with cross-entropy.

    Holds the options of `gankd.kernels.softmax_kl` and checks them at construction; see that function
    for the math. `forward(student_logits, teacher_logits, labels=None)` returns the float32 loss.
    """

    def __init__(
        self,
        temperature: float = 1.0,
        *,
        direction: str = "forward",
        beta: float = 0.5,
        t2_scale: bool = True,
        kd_weight: float = 1.0,
        ce_weight: float = 0.0,
        ignore_index: int = -100,
        reduction: str = "batchmean",
        impl: str = "auto",
    ):
        super().__init__()
        ignore_index = check_softmax_kl_options(temperature, direction=direction, beta=beta, t2_scale=t2_scale,
                                                kd_weight=kd_weight, ce_weight=ce_weight, ignore_index=ignore_index,
                                                reduction=reduction, impl=impl)  # fmt: skip
        self.temperature = float(temperature)
        self.options = dict(direction=direction, beta=beta, t2_scale=t2_scale, kd_weight=kd_weight,
                            ce_weight=ce_weight, ignore_index=ignore_index, reduction=reduction, impl=impl)  # fmt: skip

    def forward(self, student_logits: Tensor, teacher_logits: Tensor, labels: Tensor | None = None) -> Tensor:
        return softmax_kl(student_logits, teacher_logits, self.temperature, labels=labels, **self.options)

    def extra_repr(self) -> str:
        options = ", ".join(f"{name}={value!r}" for name, value in self.options.items())
        return f"temperature={self.temperature}, {options}"
