"""Checks for constructor options: each error names the option and what was seen."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any


def check_int(name: str, value: Any, *, minimum: int | None = None) -> int:
    """Return `value` if it is an int (not a bool) at least `minimum`; TypeError or ValueError otherwise."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def check_optional_int(name: str, value: Any, *, minimum: int | None = None) -> int | None:
    """Like `check_int`, but None passes through."""
    return None if value is None else check_int(name, value, minimum=minimum)


def check_bool(name: str, value: Any) -> bool:
    """Return `value` if it is a bool; TypeError otherwise (no truthiness of strings or ints)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__} {value!r}")
    return value


def check_choice(name: str, value: Any, choices: Collection[Any]) -> Any:
    """Return `value` if it is one of `choices`; ValueError listing them otherwise."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return value


def check_power_of_two(name: str, value: Any, *, minimum: int = 1, maximum: int | None = None) -> int:
    """Return `value` if it is an int power of two within [minimum, maximum]."""
    check_int(name, value, minimum=minimum)
    if value & (value - 1) or (maximum is not None and value > maximum):
        upper = f" and <= {maximum}" if maximum is not None else ""
        raise ValueError(f"{name} must be a power of two >= {minimum}{upper}, got {value}")
    return value
