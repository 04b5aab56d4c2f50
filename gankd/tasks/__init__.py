"""Tasks by name: generator, image2image, translation, classifier — each one class owning its batches and evaluation.

    task = gankd.tasks.build("image2image")
    task.unpack((inputs, targets))     # TaskBatch(inputs=(inputs,), target=targets, condition=inputs)

A task of one's own is a Task subclass under `@gankd.tasks.register("name")` in any module.
"""

from .base import Task, TaskBatch
from .classification import ClassifierTask
from .generation import GeneratorTask, Image2ImageTask
from .registry import build, infer, names, register
from .translation import TranslationTask

__all__ = [
    "ClassifierTask",
    "GeneratorTask",
    "Image2ImageTask",
    "Task",
    "TaskBatch",
    "TranslationTask",
    "build",
    "infer",
    "names",
    "register",
]
