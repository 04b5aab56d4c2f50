"""Name → constructor registries: `build(name, **options)` with errors that list what is valid."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any


class Registry:
    """Maps names to constructors for one kind of object ("model", "dataset").

    `build(name, *args, **options)` calls the constructor registered under `name`. An unknown name raises
    ValueError listing the registered names; an option the constructor does not take raises TypeError
    listing the options it does take.
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._constructors: dict[str, Callable[..., Any]] = {}

    def register(self, name: str, constructor: Callable[..., Any]) -> None:
        if name in self._constructors:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._constructors[name] = constructor

    def names(self) -> list[str]:
        return sorted(self._constructors)

    def get(self, name: str) -> Callable[..., Any]:
        if not isinstance(name, str):
            raise TypeError(f"{self.kind} name must be a str, got {type(name).__name__}")
        if name not in self._constructors:
            raise ValueError(f"unknown {self.kind} {name!r}; valid names: {', '.join(self.names())}")
        return self._constructors[name]

    def build(self, name: str, *args: Any, **options: Any) -> Any:
        constructor = self.get(name)
        # Bind first so that a misspelt option is reported with the list of valid ones, not deep inside.
        signature = inspect.signature(constructor)
        try:
            signature.bind(*args, **options)
        except TypeError as error:
            valid = [p.name for p in signature.parameters.values() if p.kind is not p.VAR_KEYWORD]
            raise TypeError(f"{self.kind} {name!r}: {error}; valid options: {', '.join(valid)}") from None
        return constructor(*args, **options)
