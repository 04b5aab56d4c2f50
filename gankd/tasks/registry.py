"""The task registry: `build(name)`, `names()`, `register(name)` for a user's own task class, `infer`."""

from __future__ import annotations

from torch import nn

from gankd.registry import Registry

from .base import Task

_TASKS = Registry("task")


def register(name: str):
    """Class decorator adding a Task subclass under `name` (also sets its `name`), from any module."""

    def decorate(cls: type[Task]) -> type[Task]:
        if not (isinstance(cls, type) and issubclass(cls, Task)):
            raise TypeError(f"a task must be a subclass of gankd.tasks.Task, got {cls!r}")
        _TASKS.add(name, cls)
        cls.name = name
        return cls

    return decorate


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
    """The one task whose `accepts(model, item)` holds; ValueError naming the candidates otherwise."""
    matching = [name for name in names() if _TASKS.get(name).accepts(model, item)]
    if len(matching) != 1:
        found = f"it could be {' or '.join(matching)}" if matching else "no task accepts them"
        raise ValueError(f"cannot tell the task of {type(model).__name__} on these data ({found}): "
                         f"name it, one of {', '.join(names())}")  # fmt: skip
    return build(matching[0])
