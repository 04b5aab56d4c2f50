"""Metrics by name: each metric is registered once with the evidence it reads, and measured by name.

Evidence is what a model's evaluation produces: two image sets (generated and reference: fid, kid,
fd_digits, kid_digits), aligned image pairs (prediction and target: psnr, ssim, lpips) or classifier
predictions (logits and labels, and the teacher's logits: accuracy, agreement). A task (gankd.tasks)
says which evidence it produces; `measure(evidence, names)` runs the named metrics on it.

A metric from the user's own module is one decorated function:

    @gankd.metrics.register_metric("mae", evidence=PairedImages)
    def mean_absolute_error(evidence, names, settings):
        return {"mae": (evidence.prediction - evidence.target).abs().mean().item()}, {}

It returns (values by name, details) and is then usable by name everywhere, `eval.metrics` included.
Several names computed together (fid and kid share one feature pass) register as one function.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import torch
from torch import Tensor

from gankd.registry import same_definition


@dataclass
class ImageSets:
    """Generated and reference images, [N, C, H, W] and [M, C, H, W] in [-1, 1], compared as distributions."""

    generated: Tensor
    reference: Tensor

    def __post_init__(self):
        # Distributions of images of two sizes are not comparable: feature extractors resize both silently.
        if self.generated.shape[1:] != self.reference.shape[1:]:
            raise ValueError(
                f"generated images are {list(self.generated.shape[1:])} and reference images "
                f"{list(self.reference.shape[1:])} (channels, height, width): compare images of one size, e.g. "
                "resize both to one size first (gankd eval --resize SIZE)"
            )

    def describe(self) -> dict:
        return {"samples_generated": int(self.generated.shape[0]), "samples_reference": int(self.reference.shape[0])}


@dataclass
class PairedImages:
    """Model outputs and their targets, [N, C, H, W] in [-1, 1], compared pair by pair."""

    prediction: Tensor
    target: Tensor

    def describe(self) -> dict:
        return {"samples": int(self.prediction.shape[0]), "data_range": 2.0}


@dataclass
class Predictions:
    """Classifier logits [N, classes], labels [N] and, when there is a teacher, its logits [N, classes]."""

    logits: Tensor
    labels: Tensor
    teacher_logits: Tensor | None = None

    def describe(self) -> dict:
        return {"samples": int(self.labels.shape[0])}


EVIDENCE = (ImageSets, PairedImages, Predictions)


@dataclass
class MetricSettings:
    """Where metrics run and which local weights the standard ones read (see gankd.weights)."""

    device: torch.device | str = "cpu"
    inception_weights: str | Path | None = None
    lpips_net: str = "alex"
    lpips_weights: str | Path | None = None


MetricFunction = Callable[[object, list[str], MetricSettings], tuple[dict[str, float], dict]]


@dataclass(frozen=True, eq=False)
class RegisteredMetric:
    names: tuple[str, ...]
    evidence: type
    compute: MetricFunction
    needs_teacher: bool = False


_METRICS: dict[str, RegisteredMetric] = {}


def register_metric(*names: str, evidence: type, needs_teacher: bool = False):
    """Decorator registering a function that computes the metrics `names` from `evidence` (one of
    ImageSets, PairedImages, Predictions). `needs_teacher`: it reads Predictions.teacher_logits."""
    if not names or not all(isinstance(name, str) and name for name in names):
        raise TypeError(f"register_metric takes one or more metric names, got {names!r}")
    if evidence not in EVIDENCE:
        raise TypeError(f"evidence must be one of {', '.join(kind.__name__ for kind in EVIDENCE)}, got {evidence!r}")

    def decorate(function: MetricFunction) -> MetricFunction:
        taken = [name for name in names if name in _METRICS and not same_definition(_METRICS[name].compute, function)]
        if taken:
            raise ValueError(f"metric {taken[0]!r} is already registered (by {_METRICS[taken[0]].compute!r})")
        entry = RegisteredMetric(names, evidence, function, needs_teacher)
        for name in names:
            _METRICS[name] = entry
        return function

    return decorate


def names(evidence: type | Iterable[type] | None = None) -> list[str]:
    """The registered metric names, sorted; only those that read `evidence` (a kind or several) when given."""
    kinds = None if evidence is None else ({evidence} if isinstance(evidence, type) else set(evidence))
    return sorted(name for name, entry in _METRICS.items() if kinds is None or entry.evidence in kinds)


def check_names(metrics: str | Iterable[str], evidence: type | Iterable[type], what: str) -> list[str]:
    """The metric names as a list; ValueError when one is unknown or does not read the given evidence."""
    chosen = [metrics] if isinstance(metrics, str) else list(metrics)
    valid = names(evidence)
    if not chosen:
        raise ValueError(f"no metric named for {what}; valid: {', '.join(valid)}")
    for name in chosen:
        if name not in _METRICS:
            raise ValueError(f"unknown metric {name!r}; metrics for {what} must be among: {', '.join(valid)}")
        if name not in valid:
            raise ValueError(f"metric {name!r} is not measured for {what}; valid: {', '.join(valid)}")
    return chosen


def needs_teacher(metrics: Iterable[str]) -> bool:
    """Whether any of the named metrics reads the teacher's predictions."""
    return any(_METRICS[name].needs_teacher for name in metrics if name in _METRICS)


def measure(
    evidence: object | Sequence[object], metrics: Iterable[str], settings: MetricSettings | None = None
) -> dict:
    """Run the named metrics, each on the piece of `evidence` (one or several kinds) that it reads.

    Returns {"metrics": {name: value}, "details": {...}, "versions": {...}}. Metrics registered together
    run once. The details hold the evidence's sample counts and, under each metric's name, what its
    function reported (extractor, weights hash, comparability).
    """
    settings = settings or MetricSettings()
    pieces = {type(piece): piece for piece in (evidence if isinstance(evidence, (list, tuple)) else [evidence])}
    what = " or ".join(kind.__name__ for kind in pieces) + " evidence"
    chosen = check_names(metrics, tuple(pieces), what)
    if needs_teacher(chosen) and all(getattr(piece, "teacher_logits", None) is None for piece in pieces.values()):
        needing = next(name for name in chosen if _METRICS[name].needs_teacher)
        raise ValueError(f"metric {needing!r} needs a teacher model (its predictions), and none was given")
    values, details, done = {}, {}, []
    for name in chosen:
        entry = _METRICS[name]
        if entry in done:
            continue
        done.append(entry)
        piece = pieces[entry.evidence]
        details.update(piece.describe())
        asked = [other for other in chosen if other in entry.names]
        computed, reported = entry.compute(piece, asked, settings)
        for asked_name in asked:
            values[asked_name] = computed[asked_name]
            if reported:
                details[asked_name] = reported
    return {"metrics": {name: values[name] for name in chosen}, "details": details, "versions": versions()}


def versions() -> dict[str, str]:
    """Versions of the libraries a metric depends on."""
    found = {}
    for package in ("gankd", "torch", "torchvision", "torch-fidelity", "lpips", "numpy"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found
