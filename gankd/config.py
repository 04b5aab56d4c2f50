"""Typed run configuration: dataclasses are the schema, YAML files in configs/ fill them, `--set a.b=c` overrides.

Unknown keys are rejected with the valid ones listed, values are checked against the field types, names
(task, loss terms, metrics, models, data sets) against their registries, and the resolved configuration is
what a run directory keeps (config.yaml) and what a checkpoint records. Files written for the earlier
format (distill.weights, gan.weight, ...) are migrated with a notice (gankd.config_migration).
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gankd.config_migration import migrate
from gankd.plugins import import_plugins

MODES = ("teacher", "scratch", "distill")


class ConfigError(ValueError):
    """A configuration that cannot be used: unknown key, wrong type, impossible combination."""


@dataclass
class InputConfig:
    # The input convention of a model trained elsewhere, applied to its image input before each forward
    # (gankd's images are in [-1, 1]): e.g. a torchvision ImageNet classifier wants
    # {mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225], size: 224}.
    mean: list[float] = field(default_factory=list)  # per channel, of images in [0, 1]; empty = images as given
    std: list[float] = field(default_factory=list)  # per channel, with mean
    size: int = 0  # resize to size × size (bilinear, antialiased) first; 0 = keep the size


@dataclass
class ModelConfig:
    name: str = "dcgan_g"  # a gankd.models name (see `gankd models`)
    options: dict[str, Any] = field(default_factory=dict)  # keyword options of that model
    input: InputConfig = field(default_factory=InputConfig)  # its input convention (default: gankd's)


@dataclass
class DataConfig:
    name: str = "digits"  # a gankd.data name
    options: dict[str, Any] = field(default_factory=dict)  # keyword options of that data set
    batch_size: int = 64  # per process and micro-batch
    num_workers: int = 0  # DataLoader worker processes
    limit_per_class: int = 0  # labelled train items per class (seeded choice); the others are dropped; 0 = all
    keep_unlabelled: bool = False  # with limit_per_class: keep the others, labels hidden (semi-supervised distill)


@dataclass
class OptimConfig:
    lr: float = 2e-4
    betas: list[float] = field(default_factory=lambda: [0.5, 0.999])  # Adam betas
    weight_decay: float = 0.0
    schedule: str = "constant"  # constant | cosine | linear (decay to 0 at the last step)
    warmup_steps: int = 0  # linear warm-up from 0
    grad_clip: float = 0.0  # max gradient norm; 0 = off


@dataclass
class StudentOptimConfig(OptimConfig):
    accumulate: int = 1  # micro-batches per optimizer step (both phases); the loss is their global mean


@dataclass
class GanConfig:
    discriminator: ModelConfig = field(default_factory=lambda: ModelConfig(name="dcgan_d"))  # built for "adversarial"
    optim: OptimConfig = field(default_factory=OptimConfig)  # the discriminator's optimizer
    conditional: bool = False  # D also sees the condition: labels (generator) or the input images (image2image)


@dataclass
class TeacherConfig:
    # A teacher trained elsewhere: its architecture and a local weights file in a gankd.models weights format.
    # name, options (and input convention) of the teacher: required, no default architecture
    model: ModelConfig = field(default_factory=lambda: ModelConfig(name=""))
    weights: str = ""  # the weights file (required)
    weights_format: str = "gankd"  # gankd | cyclegan | dcgan_example | torchvision (gankd.models.weights_formats())
    discriminator_weights: str = ""  # its discriminator's file, same format (for distill.discriminator_from_teacher)


@dataclass
class DistillConfig:
    # The teacher: a gankd run directory or checkpoint file, or a TeacherConfig mapping
    # {model: {name, options}, weights: PATH, weights_format: FORMAT}. Paths become absolute when a run starts.
    teacher: str | TeacherConfig = ""
    teacher_mode: str = "eval"  # eval | train: batch statistics and dropout on, as pix2pix's published outputs
    student_init: str = "random"  # random | teacher: the teacher pruned to the student's widths (torch-pruning)
    # > 0: the student's width (its model's width_option: ngf, width) is chosen as the widest whose MACs are at
    # most this fraction of the teacher's, and recorded in model.options when the run starts; 0: as configured.
    student_macs: float = 0.0
    discriminator_from_teacher: bool = True  # warm-start D from the teacher's discriminator


@dataclass
class EvalConfig:
    every: int = 0  # evaluate every N steps (0 = only at the end)
    metrics: list[str] = field(default_factory=list)  # empty = the task's default metrics
    num_samples: int = 0  # generated samples (0 = as many as the reference split has)
    inception_weights: str | None = None  # local Inception weights for standard fid/kid
    lpips_net: str = "alex"  # lpips metric backbone: alex | vgg
    lpips_weights: str | None = None  # local LPIPS backbone file (else $GANKD_LPIPS_BACKBONE / hub cache)
    split: str = "test"


@dataclass
class RunConfig:
    name: str = "run"  # run directory name under `output_dir`
    task: str = "generator"  # a gankd.tasks name: generator | image2image | translation | classifier
    mode: str = "teacher"  # teacher | scratch (no teacher) | distill (from distill.teacher)
    model: ModelConfig = field(default_factory=ModelConfig)  # what is trained (the student in distill mode)
    data: DataConfig = field(default_factory=DataConfig)
    optim: StudentOptimConfig = field(default_factory=StudentOptimConfig)
    # Loss terms: {name: weight} or {name: {weight: w, option: value}}; empty = the task's default terms
    # (teacher and scratch runs). Names: gankd.distill.term_names().
    terms: dict[str, Any] = field(default_factory=dict)
    gan: GanConfig = field(default_factory=GanConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    impl: str = "auto"  # loss kernels: auto (Triton on CUDA) | triton | reference (pure PyTorch)
    steps: int = 1000  # optimizer steps
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "fp32"  # fp32 | bf16 | fp16 (autocast; fp16 adds gradient scaling)
    ema: float = 0.0  # decay of an exponential moving average of the trained model (0 = off)
    sync_batchnorm: bool = False  # under torchrun on GPUs: batch norm statistics over all processes
    checkpoint_every: int = 500  # steps between checkpoints (and always at the end)
    log_every: int = 50
    sample_every: int = 0  # steps between sample grids (0 = only at the end)
    output_dir: str = "runs"
    tensorboard: bool = False
    imports: list[str] = field(default_factory=list)  # modules (or .py files) registering one's own parts


class _YAMLLoader(yaml.SafeLoader):
    """PyYAML's safe loader, reading 1e-3 and 2E+4 as floats (YAML 1.2) instead of text (YAML 1.1), so that
    untyped values (term weights and options, model options) get the numbers that typed fields get."""


_YAMLLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
    list("-+0123456789."),
)


def read_yaml(text: str) -> Any:
    """YAML text as Python values (safe: plain data only)."""
    return yaml.load(text, Loader=_YAMLLoader)


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", str(annotation))


def _convert(value: Any, annotation: Any, where: str) -> Any:
    """Check (and lightly coerce: int -> float) `value` against a field annotation."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        inner = [option for option in options if option is not type(None)]
        if len(inner) > 1:  # e.g. str | TeacherConfig: a mapping is the dataclass, anything else the plain type
            mapping = isinstance(value, dict)
            inner = [option for option in inner if dataclasses.is_dataclass(option) == mapping] or inner
        return _convert(value, inner[0], where)
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
    for depth, key in enumerate(keys[:-1], start=1):
        if target.get(key) in ("", None):  # unset (e.g. distill.teacher: ""): a section can start here
            target[key] = {}
        target = target[key]
        if not isinstance(target, dict):
            raise ConfigError(
                f"--set {assignment}: {key} is {target!r}, not a section: replace it whole, e.g. --set "
                f"'{'.'.join(keys[:depth])}={{...}}'"
            )
    try:
        target[keys[-1]] = read_yaml(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"--set {assignment}: the value is not valid YAML ({error.problem})") from None


def _merge(base: dict, update: dict) -> dict:
    merged = dict(base)
    for key, value in update.items():
        nested = isinstance(value, dict) and isinstance(merged.get(key), dict)
        # `terms` is replaced whole: a file's terms are the objective, not additions to a base's
        merged[key] = _merge(merged[key], value) if nested and key != "terms" else value
    return merged


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> RunConfig:
    """RunConfig from defaults <- the YAML file at `path` <- `--set` overrides, then validated."""
    values = to_dict(RunConfig())
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            loaded = read_yaml(path.read_text())
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            problem = getattr(error, "problem", None) or str(error).splitlines()[0]
            raise ConfigError(f"{path} is not valid YAML{where}: {problem}") from None
        if loaded is None:
            raise ConfigError(f"{path} is empty: a config names at least its task, model and data (see configs/)")
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path} must hold a mapping of config keys, got {type(loaded).__name__}")
        _migrate(loaded, str(path))
        loaded["imports"] = [_resolved_import(entry, path.parent) for entry in loaded.get("imports", [])]
        values = _merge(values, loaded)
    file_imports = list(values.get("imports", []))
    for assignment in overrides:
        apply_override(values, assignment)
    _migrate(values, "the --set overrides")
    if isinstance(values.get("imports"), list):  # .py files named in --set are relative to where it is typed
        values["imports"] = [entry if entry in file_imports else _resolved_import(entry, Path.cwd())
                             for entry in values["imports"]]  # fmt: skip
    config = from_dict(RunConfig, values)
    validate(config)
    return config


def config_from_saved(values: dict, source: str) -> RunConfig:
    """The RunConfig a run directory or checkpoint recorded (migrated when written by an earlier gankd)."""
    values = dict(values)
    _migrate(values, source)
    config = from_dict(RunConfig, _merge(to_dict(RunConfig()), values))
    import_plugins(config.imports)
    return config


def _migrate(values: dict, source: str) -> None:
    try:
        migrate(values, source)
    except ValueError as error:
        raise ConfigError(str(error)) from None


def _resolved_import(entry: object, folder: Path) -> object:
    # A .py file named relative to the config file is recorded with its absolute path.
    if isinstance(entry, str) and entry.endswith(".py") and not Path(entry).is_absolute():
        return str((folder / entry).resolve())
    return entry


def validate(config: RunConfig) -> None:
    """Combinations the types cannot express, and every name against its registry."""
    try:
        import_plugins(config.imports)
    except (ImportError, ValueError) as error:
        raise ConfigError(f"config.imports: {error}") from None
    from gankd.train.checks import check_run  # the trainer owns the choices (schedules, precisions, ...)

    try:
        check_run(config)
    except (ValueError, TypeError) as error:
        raise ConfigError(str(error)) from None


def with_absolute_paths(config: RunConfig, data_paths: Sequence[str] = ()) -> RunConfig:
    """`config` with its teacher's paths, its metric weights files and its data options named in `data_paths`
    (the data set's `gankd.data.path_options`) made absolute (from the current directory), as a run records
    them, so the run evaluates and resumes from any directory."""
    options = {key: _absolute(value) if key in data_paths and isinstance(value, str) else value
               for key, value in config.data.options.items()}  # fmt: skip
    weights = {key: _absolute(getattr(config.eval, key)) for key in ("inception_weights", "lpips_weights")}
    config = dataclasses.replace(config, distill=dataclasses.replace(config.distill),
                                 data=dataclasses.replace(config.data, options=options),
                                 eval=dataclasses.replace(config.eval, **weights))  # fmt: skip
    teacher = config.distill.teacher
    if isinstance(teacher, str):
        config.distill.teacher = _absolute(teacher)
    else:
        paths = {key: _absolute(getattr(teacher, key)) for key in ("weights", "discriminator_weights")}
        config.distill.teacher = dataclasses.replace(teacher, **paths)
    return config


def _absolute(path: str) -> str:
    return str(Path(path).expanduser().absolute()) if path else path


def save_config(config: RunConfig, path: Path) -> None:
    path.write_text(yaml.safe_dump(to_dict(config), sort_keys=False))
