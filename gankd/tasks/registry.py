"""The task registry: `build(name)`, `names()`, `register(name)` for a user's own task class, `infer`."""

from __future__ import annotations

from torch import nn

from gankd.registry import Registry

from .base import Task

_TASKS = Registry("task", base=Task)


def register(name: str):
    """Class decorator adding a Task subclass under `name` (also sets its `name`), from any module."""
    return _TASKS.register(name)


def build(task: str | Task) -> Task:
    """The task registered under `task` (a Task instance passes through)."""
    if isinstance(task, Task):
        return task
    if task not in _TASKS and isinstance(task, str):
        raise ValueError(f"task must be one of {', '.join(map(repr, names()))}; got {task!r}")
    return _TASKS.build(task)


def names() -> list[str]:
    """The registered task names, sorted."""
    return _TASKS.names()


def infer(model: nn.Module, item: tuple) -> Task:
    """The one task whose `accepts(model, item)` holds; ValueError naming the candidates otherwise. Only
    tasks that define `accepts` themselves take part: a subclass that inherits it is chosen by name."""
    candidates = [name for name in names() if "accepts" in vars(_TASKS.get(name))]
    matching = [name for name in candidates if _TASKS.get(name).accepts(model, item)]
    if len(matching) != 1:
        found = f"it could be {' or '.join(matching)}" if matching else "no task accepts them"
        raise ValueError(f"cannot tell the task of {type(model).__name__} on these data ({found}): "
                         f"name it, one of {', '.join(names())}")  # fmt: skip
    return build(matching[0])
