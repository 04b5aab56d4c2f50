"""Terms on tapped feature maps, each summed over its (student path, teacher path) pairs."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from gankd.distill.shapes import PairShapes
from gankd.kernels import check_adapted_feature_match_options
from gankd.losses import AdaptedFeatureLoss, AttentionTransferLoss, FeatureMatchLoss

from .base import LossTerm, StepTensors, TermContext, register_term


class FeaturePairsTerm(LossTerm):
    """A term summed over tapped pairs: `pairs` maps student module paths to teacher module paths."""

    needs_teacher = True
    reads_output = False

    def __init__(self, weight: float, pairs: Mapping[str, str] | None):
        super().__init__(weight)
        self.pairs = check_feature_pairs(self.name, pairs)

    @property
    def feature_pairs(self) -> tuple[tuple[str, str], ...]:
        return self.pairs

    def forward(self, step: StepTensors) -> Tensor:
        total = None
        for index, (student_path, teacher_path) in enumerate(self.pairs):
            student_map, teacher_map = step.student_features[student_path], step.teacher_features[teacher_path]
            value = self.pair_loss(index, PairShapes(student_path, student_map, teacher_path, teacher_map))
            total = value if total is None else total + value
        return total

    def pair_loss(self, index: int, pair: PairShapes) -> Tensor:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"weight={self.weight}, pairs={dict(self.pairs)}"


def check_feature_pairs(term: str, pairs: object) -> tuple[tuple[str, str], ...]:
    """{student module path: teacher module path} as a tuple of (student, teacher) pairs, in order."""
    if not pairs:
        raise ValueError(f"the {term!r} term needs pairs={{student module path: teacher module path}}; "
                         "gankd.models.feature_layers(model) lists a zoo model's natural taps")  # fmt: skip
    if not isinstance(pairs, Mapping):
        raise TypeError(f"pairs of {term!r} must be a dict {{student module path: teacher module path}}, got "
                        f"{type(pairs).__name__}")  # fmt: skip
    for student_path, teacher_path in pairs.items():
        if not isinstance(student_path, str) or not isinstance(teacher_path, str):
            raise TypeError(f"pairs of {term!r} map module paths (str) to module paths, got "
                            f"{student_path!r}: {teacher_path!r}")  # fmt: skip
    return tuple(pairs.items())


@register_term("feature")
class FeatureTerm(FeaturePairsTerm):
    """feature_match(student map, teacher map, kind) per pair: "mse", "l1", "smooth_l1" or "cosine" (along
    channels); the maps must have one shape (else use "adapted" or "attention")."""

    def __init__(self, weight: float = 1.0, *, pairs: Mapping[str, str] | None = None, kind: str = "mse",
                 impl: str = "auto"):  # fmt: skip
        super().__init__(weight, pairs)
        self.loss = FeatureMatchLoss(kind, impl=impl)

    def pair_loss(self, index: int, pair: PairShapes) -> Tensor:
        pair.check_same_shape()
        return self.loss(pair.student_map, pair.teacher_map)


@register_term("adapted")
class AdaptedTerm(FeaturePairsTerm):
    """Per pair, a learned 1×1 adapter maps the student's channels to the teacher's, then mse ("mse") or
    mean |·| ("l1") against the teacher's map — GAN Compression's feature distillation, fused
    (gankd.losses.AdaptedFeatureLoss). The adapters train with the student; their channels are read from
    the tapped layers (or from the Distiller's example_batch)."""

    def __init__(self, weight: float = 1.0, *, pairs: Mapping[str, str] | None = None, kind: str = "mse",
                 impl: str = "auto"):  # fmt: skip
        super().__init__(weight, pairs)
        check_adapted_feature_match_options(kind=kind, reduction="mean", impl=impl)
        self.kind, self.impl = kind, impl
        self.adapters = nn.ModuleList()

    def setup(self, context: TermContext) -> None:
        self.adapters = nn.ModuleList(
            AdaptedFeatureLoss(
                student_channels, teacher_channels, kind=self.kind, impl=self.impl, device=context.device
            )
            for student_channels, teacher_channels in context.pair_channels(self.pairs)
        )

    def pair_loss(self, index: int, pair: PairShapes) -> Tensor:
        adapter = self.adapters[index]
        pair.check_adapter(adapter.student_channels, adapter.teacher_channels)
        return adapter(pair.student_map, pair.teacher_map)


@register_term("attention")
class AttentionTerm(FeaturePairsTerm):
    """attention_transfer(student map, teacher map, p) per pair (Zagoruyko & Komodakis); channels may
    differ, batch and spatial sizes must not, and the maps need more than one spatial position."""

    def __init__(self, weight: float = 1.0, *, pairs: Mapping[str, str] | None = None, p: float = 2.0,
                 impl: str = "auto"):  # fmt: skip
        super().__init__(weight, pairs)
        try:
            self.loss = AttentionTransferLoss(p, impl=impl)
        except ValueError as error:
            raise ValueError(f"the 'attention' term: {error}") from None

    def setup(self, context: TermContext) -> None:
        # Features of the wrong shape (pooled ones) are refused at construction where the example batch shows them.
        shapes = context.pair_shapes(self.pairs)
        if shapes is None:
            return
        for (student_path, teacher_path), (student, teacher) in zip(self.pairs, shapes, strict=True):
            pair = PairShapes(student_path, torch.empty(student, device="meta"), teacher_path,
                              torch.empty(teacher, device="meta"))  # fmt: skip
            self.pair_loss(0, pair)

    def pair_loss(self, index: int, pair: PairShapes) -> Tensor:
        pair.check_positions("attention")
        try:  # e.g. pooled features, which attention_transfer refuses: the error names the pair
            return self.loss(pair.student_map, pair.teacher_map)
        except ValueError as error:
            raise ValueError(
                f"the 'attention' term on {pair.names}: {error} (the 'feature' and 'adapted' terms "
                "compare pooled features)"
            ) from None
