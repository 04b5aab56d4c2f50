"""Typed run configuration: dataclasses are the schema, YAML files in configs/ fill them, `--set a.b=c` overrides.

Unknown keys are rejected with the valid ones listed, values are checked against the field types, and the
resolved configuration is what a run directory keeps (config.yaml) and what a checkpoint records.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

TASKS = ("generator", "image2image", "classifier")
MODES = ("teacher", "scratch", "distill")


class ConfigError(ValueError):
    """A configuration that cannot be used: unknown key, wrong type, impossible combination."""


@dataclass
class ModelConfig:
    name: str = "dcgan_g"  # a gankd.models name (see `gankd models`)
    options: dict[str, Any] = field(default_factory=dict)  # keyword options of that model


@dataclass
class DataConfig:
    name: str = "digits"  # a gankd.data name
    options: dict[str, Any] = field(default_factory=dict)  # keyword options of that data set
    batch_size: int = 64  # per process
    num_workers: int = 0  # DataLoader worker processes
    limit_per_class: int = 0  # train on only this many labelled items per class (seeded choice); 0 = all


@dataclass
class OptimConfig:
    lr: float = 2e-4
    betas: list[float] = field(default_factory=lambda: [0.5, 0.999])  # Adam betas
    weight_decay: float = 0.0
    schedule: str = "constant"  # constant | cosine | linear (decay to 0 at the last step)
    warmup_steps: int = 0  # linear warm-up from 0
    grad_clip: float = 0.0  # max gradient norm; 0 = off


@dataclass
class GanConfig:
    discriminator: ModelConfig = field(default_factory=lambda: ModelConfig(name="dcgan_d"))
    loss: str = "nonsaturating"  # nonsaturating | hinge | lsgan
    optim: OptimConfig = field(default_factory=OptimConfig)  # the discriminator's optimizer
    weight: float = 1.0  # weight of the adversarial term (0 = no discriminator, e.g. pure L1 image2image)


@dataclass
class DistillConfig:
    teacher: str = ""  # the teacher's run directory or checkpoint file
    feature_pairs: dict[str, str] = field(default_factory=dict)  # {student module path: teacher module path}
    weights: dict[str, float] = field(default_factory=dict)  # loss term -> weight, e.g. {output: 1.0, adapted: 1.0}
    output_kind: str = "l1"  # output term: l1 | mse
    feature_kind: str = "mse"  # feature term: mse | l1 | smooth_l1 | cosine
    attention_p: float = 2.0
    temperature: float = 4.0  # kd term
    discriminator_from_teacher: bool = True  # warm-start D from the teacher run's discriminator
    lpips_net: str = "alex"
    lpips_weights: str | None = None  # local LPIPS backbone file (else $GANKD_LPIPS_BACKBONE / hub cache)
    impl: str = "auto"  # loss kernels: auto (Triton on CUDA) | triton | reference (pure PyTorch)


@dataclass
class EvalConfig:
    every: int = 0  # evaluate every N steps (0 = only at the end)
    metrics: list[str] = field(default_factory=list)  # empty = the task's usual metrics
    num_samples: int = 0  # generated samples (0 = as many as the reference split has)
    inception_weights: str | None = None  # local Inception weights for standard fid/kid
    split: str = "test"


@dataclass
class RunConfig:
    name: str = "run"  # run directory name under `output_dir`
    task: str = "generator"  # generator | image2image | classifier
    mode: str = "teacher"  # teacher | scratch | distill
    model: ModelConfig = field(default_factory=ModelConfig)  # what is trained (the student in distill mode)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    gan: GanConfig = field(default_factory=GanConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    steps: int = 1000  # optimizer steps
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "fp32"  # fp32 | bf16 | fp16 (autocast; fp16 adds gradient scaling)
    ema: float = 0.0  # decay of an exponential moving average of the trained model (0 = off)
    checkpoint_every: int = 500  # steps between checkpoints (and always at the end)
    log_every: int = 50
    sample_every: int = 0  # steps between sample grids (0 = only at the end)
    output_dir: str = "runs"
    tensorboard: bool = False


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", str(annotation))


def _convert(value: Any, annotation: Any, where: str) -> Any:
    """Check (and lightly coerce: int -> float) `value` against a field annotation."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        inner = next(option for option in options if option is not type(None))
        return _convert(value, inner, where)
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a mapping of {annotation.__name__} fields, got {value!r}")
        return from_dict(annotation, value, where)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a mapping, got {type(value).__name__} {value!r}")
        key_type, value_type = typing.get_args(annotation)
        return {
            _convert(key, key_type, f"{where} key"): _convert(item, value_type, f"{where}.{key}")
            for key, item in value.items()
        }
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {type(value).__name__} {value!r}")
        (item_type,) = typing.get_args(annotation)
        return [_convert(item, item_type, f"{where}[{i}]") for i, item in enumerate(value)]
    if annotation is Any:
        return value
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation is float and isinstance(value, str):
        try:  # YAML 1.1 reads 1e-3 (no dot) as text
            return float(value)
        except ValueError:
            pass
    if (annotation in (int, float) and isinstance(value, bool)) or not isinstance(value, annotation):
        raise ConfigError(f"{where} must be {_type_name(annotation)}, got {type(value).__name__} {value!r}")
    return value


def from_dict(schema: type, values: dict, where: str = "config") -> Any:
    """Build dataclass `schema` from a nested dict; unknown keys raise ConfigError listing the valid ones."""
    hints = typing.get_type_hints(schema)
    names = [f.name for f in dataclasses.fields(schema)]
    unknown = [key for key in values if key not in names]
    if unknown:
        raise ConfigError(f"unknown key {where}.{unknown[0]}; valid keys of {where}: {', '.join(names)}")
    return schema(**{key: _convert(value, hints[key], f"{where}.{key}") for key, value in values.items()})


def to_dict(config: Any) -> dict:
    return dataclasses.asdict(config)


def apply_override(values: dict, assignment: str) -> None:
    """Apply 'a.b=c' to a nested dict in place; the value is read as YAML (8, 0.5, true, [1, 2], text)."""
    path, separator, text = assignment.partition("=")
    if not separator or not path:
        raise ConfigError(f"--set takes key.path=value, got {assignment!r}")
    keys = path.split(".")
    target = values
    for key in keys[:-1]:
        target = target.setdefault(key, {})
        if not isinstance(target, dict):
            raise ConfigError(f"--set {assignment}: {key} is not a section")
    target[keys[-1]] = yaml.safe_load(text)


def _merge(base: dict, update: dict) -> dict:
    merged = dict(base)
    for key, value in update.items():
        nested = isinstance(value, dict) and isinstance(merged.get(key), dict)
        merged[key] = _merge(merged[key], value) if nested else value
    return merged


def load_config(path: str | Path | None = None, overrides: list[str] = (), base: dict | None = None) -> RunConfig:
    """RunConfig from defaults <- `base` <- the YAML file at `path` <- `--set` overrides, then validated."""
    values = to_dict(RunConfig())
    if base:
        values = _merge(values, base)
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        loaded = yaml.safe_load(path.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path} must hold a mapping of config keys, got {type(loaded).__name__}")
        values = _merge(values, loaded)
    for assignment in overrides:
        apply_override(values, assignment)
    config = from_dict(RunConfig, values)
    validate(config)
    return config


def validate(config: RunConfig) -> None:
    """Combinations the types cannot express."""
    if config.task not in TASKS:
        raise ConfigError(f"config.task must be one of {TASKS}, got {config.task!r}")
    if config.mode not in MODES:
        raise ConfigError(f"config.mode must be one of {MODES}, got {config.mode!r}")
    if config.mode == "distill" and not config.distill.teacher:
        raise ConfigError("config.mode is 'distill' but config.distill.teacher (the teacher's run directory) is empty")
    if config.mode == "distill" and not any(weight > 0 for weight in config.distill.weights.values()):
        raise ConfigError("config.mode is 'distill' but config.distill.weights gives no loss term a weight > 0")
    _validate_losses_and_metrics(config)
    from gankd.kernels import IMPLS

    if config.distill.impl not in IMPLS:
        raise ConfigError(f"config.distill.impl must be one of {IMPLS}, got {config.distill.impl!r}")
    if config.precision not in ("fp32", "bf16", "fp16"):
        raise ConfigError(f"config.precision must be fp32, bf16 or fp16, got {config.precision!r}")
    if not 0.0 <= config.ema < 1.0:
        raise ConfigError(f"config.ema must be in [0, 1), got {config.ema}")
    for name, value in (("steps", config.steps), ("checkpoint_every", config.checkpoint_every),
                        ("log_every", config.log_every), ("data.batch_size", config.data.batch_size)):  # fmt: skip
        if value < 1:
            raise ConfigError(f"config.{name} must be >= 1, got {value}")
    non_negative = {
        "sample_every": config.sample_every,
        "eval.every": config.eval.every,
        "eval.num_samples": config.eval.num_samples,
        "data.num_workers": config.data.num_workers,
        "data.limit_per_class": config.data.limit_per_class,
        "optim.warmup_steps": config.optim.warmup_steps,
        "optim.grad_clip": config.optim.grad_clip,
        "gan.optim.grad_clip": config.gan.optim.grad_clip,
        "gan.weight": config.gan.weight,
    }
    for name, value in non_negative.items():
        if value < 0:
            raise ConfigError(f"config.{name} must be >= 0, got {value}")


def _validate_losses_and_metrics(config: RunConfig) -> None:
    from gankd.losses.adversarial import GAN_MODES
    from gankd.metrics.evaluate import CLASSIFIER_METRICS, GENERATION_METRICS, PAIRED_METRICS

    for name, optim in (("optim", config.optim), ("gan.optim", config.gan.optim)):
        if optim.schedule not in ("constant", "cosine", "linear"):
            raise ConfigError(f"config.{name}.schedule must be constant, cosine or linear, got {optim.schedule!r}")
        if len(optim.betas) != 2:
            raise ConfigError(f"config.{name}.betas must be two numbers (Adam's beta1, beta2), got {optim.betas}")
    if config.gan.loss not in GAN_MODES:
        raise ConfigError(f"config.gan.loss must be one of {GAN_MODES}, got {config.gan.loss!r}")
    if config.task == "generator" and config.mode != "distill" and config.gan.weight <= 0:
        raise ConfigError("config.gan.weight must be > 0 to train a generator without a teacher (it is its only loss)")
    valid = {"generator": GENERATION_METRICS, "image2image": PAIRED_METRICS, "classifier": CLASSIFIER_METRICS}
    wrong = [name for name in config.eval.metrics if name not in valid[config.task]]
    if wrong:
        raise ConfigError(f"config.eval.metrics has {wrong} not measured for task {config.task!r}; valid: "
                          f"{valid[config.task]}")  # fmt: skip
    if config.eval.split not in ("train", "test"):
        raise ConfigError(f"config.eval.split must be train or test, got {config.eval.split!r}")


def save_config(config: RunConfig, path: Path) -> None:
    path.write_text(yaml.safe_dump(to_dict(config), sort_keys=False))
