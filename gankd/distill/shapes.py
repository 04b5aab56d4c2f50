"""Shape checks between student and teacher tensors, with errors that name the term, both sides and shapes."""

from __future__ import annotations

from torch import Tensor


def check_same_shape(term: str, name: str, value: Tensor, other_name: str, other: Tensor) -> None:
    """`value` and `other` must have one shape; the error names the term and both sides."""
    if value.shape != other.shape:
        raise ValueError(
            f"the {term!r} term compares {name} {tuple(value.shape)} with {other_name} {tuple(other.shape)}: "
            "shapes must be equal"
        )


class PairShapes:
    """Shape checks of one tapped (student, teacher) pair, with errors naming both paths and shapes."""

    def __init__(self, student_path: str, student_map: Tensor, teacher_path: str, teacher_map: Tensor):
        self.student_map, self.teacher_map = student_map, teacher_map
        student_side = f"student {student_path!r} {tuple(student_map.shape)}"
        self.names = f"{student_side} and teacher {teacher_path!r} {tuple(teacher_map.shape)}"
        if student_map.dim() < 2 or teacher_map.dim() < 2:
            raise ValueError(f"tapped features must be [N, C, *spatial] or [N, C], got {self.names}")

    def check_positions(self, term: str) -> None:
        student, teacher = self.student_map.shape, self.teacher_map.shape
        if student[0] != teacher[0] or student[2:] != teacher[2:]:
            raise ValueError(
                f"the {term!r} term needs tapped features of equal batch and spatial sizes, got {self.names}; "
                "tap layers at the same resolution"
            )

    def check_same_shape(self) -> None:
        self.check_positions("feature")
        if self.student_map.shape[1] != self.teacher_map.shape[1]:
            raise ValueError(
                f"the 'feature' term needs equal channels, got {self.names}; use the 'adapted' term, whose "
                "1x1 adapters map student channels to teacher channels, or 'attention'"
            )

    def check_adapter(self, student_channels: int, teacher_channels: int) -> None:
        self.check_positions("adapted")
        if (self.student_map.shape[1], self.teacher_map.shape[1]) != (student_channels, teacher_channels):
            raise ValueError(
                f"the 'adapted' term's adapter maps {student_channels} to {teacher_channels} channels (as read at "
                f"construction) but the features are {self.names}; pass example_batch=<one batch> to the "
                "Distiller so that it reads the channels from a forward"
            )
