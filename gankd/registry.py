"""Name → constructor registries: `build(name, **options)` with errors that list what is valid.

Every extensible kind (models, data sets, tasks, loss terms, metrics) keeps one Registry. A user adds to
one from their own module with its `register` decorator and names the module in a run config's
`imports`; nothing inside gankd changes.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeVar

Constructor = TypeVar("Constructor", bound=Callable[..., Any])


class Registry:
    """Maps names to constructors for one kind of object ("model", "dataset", "loss term", ...).

    `build(name, *args, **options)` calls the constructor registered under `name`. An unknown name raises
    ValueError listing the registered names; an option the constructor does not take raises TypeError
    listing the options it does take. With a `base` class, only its subclasses register, and each learns
    its registered name (`cls.name`).
    """

    def __init__(self, kind: str, base: type | None = None):
        self.kind, self.base = kind, base
        self._constructors: dict[str, Callable[..., Any]] = {}

    def add(self, name: str, constructor: Callable[..., Any]) -> None:
        """Register `constructor` under `name`; a name already taken raises ValueError."""
        if not isinstance(name, str) or not name:
            raise TypeError(f"a {self.kind} name must be a non-empty str, got {name!r}")
        if self.base is not None and not (isinstance(constructor, type) and issubclass(constructor, self.base)):
            raise TypeError(f"a {self.kind} must be a subclass of {self.base.__name__}, got {constructor!r}")
        if name in self._constructors and not same_definition(self._constructors[name], constructor):
            raise ValueError(f"{self.kind} {name!r} is already registered (by {self._constructors[name]!r})")
        self._constructors[name] = constructor
        if self.base is not None:
            constructor.name = name

    def register(self, name: str) -> Callable[[Constructor], Constructor]:
        """Decorator form of `add`: `@registry.register("name")` above a class or function."""

        def decorate(constructor: Constructor) -> Constructor:
            self.add(name, constructor)
            return constructor

        return decorate

    def names(self) -> list[str]:
        return sorted(self._constructors)

    def __contains__(self, name: object) -> bool:
        return name in self._constructors

    def get(self, name: str) -> Callable[..., Any]:
        if not isinstance(name, str):
            raise TypeError(f"{self.kind} name must be a str, got {type(name).__name__}")
        if name not in self._constructors:
            raise ValueError(f"unknown {self.kind} {name!r}; valid names: {', '.join(self.names())}")
        return self._constructors[name]

    def check_options(self, name: str, *args: Any, hidden: tuple[str, ...] = (), **options: Any) -> None:
        """TypeError listing the valid options (but the `hidden` ones, which the caller fills in) when the
        constructor of `name` cannot take these arguments."""
        signature = inspect.signature(self.get(name))
        try:
            signature.bind(*args, **options)
        except TypeError as error:
            parameters = signature.parameters.values()
            valid = [p.name for p in parameters if p.kind is not p.VAR_KEYWORD and p.name not in hidden]
            raise TypeError(f"{self.kind} {name!r}: {error}; valid options: {', '.join(valid)}") from None

    def build(self, name: str, *args: Any, **options: Any) -> Any:
        # Bind first so that a misspelt option is reported with the list of valid ones, not deep inside.
        self.check_options(name, *args, **options)
        return self.get(name)(*args, **options)


def same_definition(first: Callable[..., Any], second: Callable[..., Any]) -> bool:
    """Whether two constructors are one definition: the same object, or the same qualified name in the same
    source file (one module imported again under another name, or after a failed first import)."""
    if first is second:
        return True
    try:
        same_file = inspect.getsourcefile(first) == inspect.getsourcefile(second)
        return same_file and first.__qualname__ == second.__qualname__
    except (AttributeError, TypeError):
        return False
