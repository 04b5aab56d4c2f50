"""The training loop: train a teacher, a scratch student, or distil a student, from a RunConfig.

A run directory (output_dir/name) holds config.yaml (resolved), log.jsonl, checkpoints/last.pt,
samples/*.png and metrics.json. Checkpoints carry everything a resume needs (models, adapters, optimizers,
schedules, scaler, EMA, RNG states, step, config): a run stopped at step k and resumed reaches the same
weights as one never stopped.
"""

import json
import os
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset
from torchvision.utils import save_image

import gankd.data
from gankd.config import (
    ConfigError,
    RunConfig,
    config_from_saved,
    load_config,
    save_config,
    to_dict,
    with_absolute_paths,
)
from gankd.metrics import MetricSettings

from .builders import batches, build_dataset, build_model, example_items
from .checkpoint import load_checkpoint, save_checkpoint, trained_weights
from .distributed import Distributed, setup, teardown
from .interrupts import DeferredInterrupts
from .logger import RunLogger
from .objective import build_objective, sized_student
from .stepper import NonFiniteLoss, Stepper
from .teacher import load_teacher

# Beside checkpoints/last.pt: the checkpoint before it, verified by the finite steps that followed it, and
# after a diverged loss the only checkpoint there was, unverified.
VERIFIED, UNVERIFIED = "verified.pt", "last-unverified.pt"
# Keys of the config that may change when a run is resumed (more steps, other logging or evaluation).
RESUMABLE_CHANGES = {"steps", "checkpoint_every", "log_every", "sample_every", "eval", "tensorboard"}


class TrainingError(RuntimeError):
    """Training stopped; the message says why and what was kept."""


def run_directory(config: RunConfig) -> Path:
    return Path(config.output_dir) / config.name


def resumed_config(path, overrides: list[str] = ()) -> RunConfig:
    """The config to resume a run with: the run's own recorded config (config.yaml in its directory, which the
    config file at `path` and the `overrides` locate) with the `overrides` applied on top, so the overrides it
    was started with stay part of it. What may change on resume is RESUMABLE_CHANGES; train() refuses the rest."""
    located = load_config(path, list(overrides))
    recorded = run_directory(with_absolute_paths(located)) / "config.yaml"
    if not recorded.is_file():
        raise TrainingError(f"--resume: {recorded.parent} holds no run (no config.yaml): start it without --resume")
    return load_config(recorded, list(overrides))


def saved_config(state: dict, location) -> RunConfig:
    """The config a checkpoint recorded (its `imports` imported, earlier formats migrated)."""
    return config_from_saved(state["config"], f"the checkpoint at {location}")


def load_trained_model(location) -> tuple[nn.Module, RunConfig, dict]:
    """(model with its trained weights in eval mode, the run's config, the checkpoint) from a run or .pt file."""
    state = load_checkpoint(location)
    config = saved_config(state, location)
    model = build_model(config.model)
    model.load_state_dict(trained_weights(state))
    return model.eval(), config, state


def _check_resumable(state: dict, config: RunConfig, location: Path) -> None:
    if "terms" not in state:
        raise TrainingError(f"{location} was written before gankd's loss terms held the adapters (it has no "
                            "'terms'); it can be evaluated, exported and distilled from, not resumed")  # fmt: skip
    saved = to_dict(saved_config(state, location))
    current = to_dict(config)
    changed = [difference for key in current if key not in RESUMABLE_CHANGES
               for difference in _differences(key, saved.get(key), current[key])]  # fmt: skip
    if changed:
        raise TrainingError(
            f"cannot resume with {'; '.join(changed)}: a resumed run keeps its recorded config except "
            f"{', '.join(sorted(RESUMABLE_CHANGES))}; drop those --set overrides, or start a new run (another name)"
        )
    decaying = config.optim.schedule != "constant" or config.gan.optim.schedule != "constant"
    if saved["steps"] != config.steps and decaying:
        raise TrainingError(f"cannot resume with steps={config.steps} (was {saved['steps']}): the learning-rate "
                            "schedule decays to the last step; only constant schedules can be extended")  # fmt: skip


def _save_verifying(state: dict, last: Path) -> None:
    """Write `state` as `last`; the checkpoint it replaces, followed since by steps with finite losses, is kept
    as verified.pt until this one is verified in turn (a loss that diverges soon after a checkpoint can leave
    that checkpoint's weights already blown up though its own loss was finite)."""
    written = last.with_name("next.pt")
    save_checkpoint(state, written)  # a failed write leaves the checkpoints as they were
    if last.exists():
        os.replace(last, last.with_name(VERIFIED))
    os.replace(written, last)


def _roll_back(last: Path, checkpoint_every: int) -> str:
    """After a non-finite loss: make the verified checkpoint the run's last.pt again; what was kept, said."""
    verified = last.with_name(VERIFIED)
    if verified.exists():
        discarded = load_checkpoint(last)["step"] if last.exists() else None
        os.replace(verified, last)
        step = load_checkpoint(last)["step"]
        dropped = f" (the one of step {discarded}, unverified, was discarded)" if discarded is not None else ""
        return f"the last good checkpoint, step {step}, is {last}{dropped}"
    if last.exists():
        unverified = last.with_name(UNVERIFIED)
        os.replace(last, unverified)
        return (f"no checkpoint is known good: the only one, written less than {checkpoint_every} steps before "
                f"the loss diverged, is kept as {unverified} (its weights may already be diverging)")  # fmt: skip
    return "no checkpoint was written yet"


def _differences(path: str, old, new) -> list[str]:
    """'path: old -> new' for each leaf where two config values differ."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [line for key in sorted(old.keys() | new.keys())
                for line in _differences(f"{path}.{key}", old.get(key), new.get(key))]  # fmt: skip
    return [] if old == new else [f"{path}: {old!r} -> {new!r}"]


def evaluate(stepper: Stepper, config: RunConfig, dataset: Dataset | None = None) -> dict:
    """The task's metrics (config.eval.metrics, else its defaults) of the trained model on the evaluation split
    (`dataset`, built from the config when not given)."""
    task = stepper.task
    dataset = dataset if dataset is not None else build_dataset(config, config.eval.split)
    teacher = stepper.distiller.teacher
    names = config.eval.metrics or task.default_metrics(dataset, teacher=teacher is not None)
    settings = MetricSettings(stepper.device, config.eval.inception_weights, config.eval.lpips_net,
                              config.eval.lpips_weights)  # fmt: skip
    return task.evaluate(stepper.eval_model(), dataset, names, teacher=teacher, settings=settings,
                         num_samples=config.eval.num_samples or None)  # fmt: skip


def save_samples(stepper: Stepper, dataset: Dataset, path: Path) -> None:
    """The task's sample grid (generator samples, or inputs/outputs/targets of `dataset`), when it has one."""
    images = stepper.task.sample_grid(stepper.eval_model(), dataset, stepper.device)
    if images is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(images, path, nrow=8, normalize=True, value_range=(-1, 1))


def train(config: RunConfig, *, resume: bool = False, stop_at: int | None = None) -> dict:
    """Run `config` to config.steps (or, with `stop_at`, stop after that step as an interrupted run would).

    Returns the final metrics (rank 0) or an empty dict. Raises TrainingError with what was kept.
    """
    dist = setup(config.device)
    try:
        return _train(config, dist, resume, stop_at)
    finally:
        teardown(dist)


def _train(config: RunConfig, dist: Distributed, resume: bool, stop_at: int | None) -> dict:
    # Recorded so: the run evaluates and resumes from any directory.
    config = with_absolute_paths(config, gankd.data.path_options(config.data.name))
    run_dir = run_directory(config)
    last = run_dir / "checkpoints" / "last.pt"
    if run_dir.exists() and not run_dir.is_dir():
        raise TrainingError(
            f"the run directory {run_dir} (output_dir/name) is a file: choose another name or output_dir"
        )
    if last.exists() and not resume:
        raise TrainingError(f"{run_dir} already holds a run: pass --resume to continue it, or choose another name")
    if resume and not last.exists():
        raise TrainingError(f"--resume: {last} does not exist")
    try:
        teacher = load_teacher(config) if config.mode == "distill" else None
        dataset = build_dataset(config, "train", training=True)
        items = example_items(dataset, config.seed) if teacher is not None else None
        config = sized_student(config, teacher, items)  # recorded so: eval and export rebuild the chosen width
        distiller = build_objective(config, dist, teacher, items)
        stepper = Stepper(config, dist, distiller)
        eval_data = build_dataset(config, config.eval.split) if dist.is_main else None  # built once per run
    except (ValueError, TypeError) as error:  # unknown model or data option, wrong layer path, ...
        raise ConfigError(f"cannot build the run from its config: {error}") from error
    for built in (dataset, eval_data) if dist.is_main else ():
        # A wrapped data set (LabelledSubset, PartlyLabelled) reports its inner one's summary.
        summary = getattr(getattr(built, "dataset", built), "check_summary", None)
        if summary:
            print(f"{config.name}: data: {summary}", file=sys.stderr, flush=True)
    start = 0
    if resume:
        state = load_checkpoint(last)  # on the CPU: RNG states must stay there, modules copy to their devices
        _check_resumable(state, config, last)
        stepper.load_state_dict(state)
        start = state["step"]
    if dist.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, run_dir / "config.yaml")
    data = batches(dataset, config, dist, start)
    logger = RunLogger(run_dir, enabled=dist.is_main, total=config.steps, start=start, tensorboard=config.tensorboard)
    end = config.steps if stop_at is None else min(stop_at, config.steps)
    started = time.perf_counter()
    saved_through = done = start
    in_step = False
    if dist.is_main:
        what = f"resuming at step {start}" if start else "training"
        print(f"{config.name}: {what} in {run_dir}", file=sys.stderr, flush=True)
    try:
        with DeferredInterrupts().installed() as interrupts:
            for step in range(start, end):
                try:
                    batch = next(data)  # an interrupt while loading leaves the model as the last step left it
                except (ValueError, OSError) as error:  # a file that went bad after the data set was checked
                    kept = _keep_completed(stepper, config, dist, last, done, saved_through)
                    raise TrainingError(f"step {step + 1}: its batch cannot be loaded: {_last_line(error)}; "
                                        f"{kept}, once the file is fixed or removed") from None  # fmt: skip
                try:
                    in_step = True
                    scalars = stepper.step(batch, step)
                    in_step = False
                except NonFiniteLoss as error:
                    kept = _roll_back(last, config.checkpoint_every) if dist.is_main else "see the main process"
                    raise TrainingError(f"step {step + 1}: {error}; training stopped, {kept}. In a new run (another "
                                        "name), lower optim.lr, use precision fp32, or set optim.grad_clip"
                                        ) from None  # fmt: skip
                except (RuntimeError, ValueError, TypeError) as error:
                    if step != start or isinstance(error, torch.OutOfMemoryError):
                        raise
                    # Most likely the model, the teacher and the data do not fit each other.
                    raise TrainingError(_misfit(config, stepper, batch, error, step + 1)) from error
                done = step + 1
                logger.progress(scalars)
                if done % config.log_every == 0 or done == end:
                    logger.log(done, {name: dist.all_mean(value) for name, value in scalars.items()})
                if done % config.checkpoint_every == 0 or done == end:
                    saved_through = _save_step(stepper, config, dist, last, done)
                if dist.any(interrupts.requested is not None):  # every process stops after the same step
                    if done > saved_through:
                        saved_through = _save_step(stepper, config, dist, last, done)
                    raise TrainingError(f"interrupted ({interrupts.requested or 'by another process'}) after step "
                                        f"{done}; {last} holds step {done}: continue with --resume")  # fmt: skip
                sampling = dist.is_main and config.sample_every and done % config.sample_every == 0
                evaluating = dist.is_main and config.eval.every and done % config.eval.every == 0
                if sampling or (evaluating and done != config.steps):
                    # They leave the training's random streams (dropout, noise) where they were, so that eval.every
                    # and sample_every do not change what is trained, nor a resumed run.
                    with torch.random.fork_rng(devices=[stepper.device] if stepper.device.type == "cuda" else []):
                        if sampling:
                            save_samples(stepper, eval_data, run_dir / "samples" / f"step_{done:06d}.png")
                        if evaluating and done != config.steps:
                            metrics = evaluate(stepper, config, eval_data)["metrics"]
                            logger.log(done, {f"eval/{name}": value for name, value in metrics.items()})
    except KeyboardInterrupt:
        # A second Ctrl-C: keep every completed step, unless it landed inside a step (its updates are partial).
        kept = _keep_completed(stepper, config, dist, last, done, saved_through, partial_step=in_step)
        raise TrainingError(f"interrupted after step {done}; {kept}") from None
    except torch.OutOfMemoryError as error:
        kept = f"the last checkpoint is kept at {last}" if last.exists() else "no checkpoint was written yet"
        raise TrainingError(f"out of memory ({error}); {kept}. Lower data.batch_size, use precision bf16, or a "
                            "smaller model width") from None  # fmt: skip
    finally:
        logger.close()
    if end < config.steps or not dist.is_main:
        return {}
    result = evaluate(stepper, config, eval_data)
    result["train_seconds"] = time.perf_counter() - started
    save_samples(stepper, eval_data, run_dir / "samples" / "final.png")
    (run_dir / "metrics.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"{config.name}: finished; metrics, checkpoint and samples are in {run_dir}", file=sys.stderr, flush=True)
    return result


def _misfit(config: RunConfig, stepper: Stepper, batch: list, error: BaseException, step: int) -> str:
    """The first step failed: most likely the model, the teacher and the data do not fit each other. Says what
    each is, so the user can see which option to change (--debug shows the traceback)."""
    items = ", ".join(f"[{', '.join(map(str, part.shape[1:]))}]" if isinstance(part, torch.Tensor) and part.dim() > 1
                      else "labels" for part in batch[0])  # fmt: skip
    teacher = stepper.distiller.teacher
    parts = f"the model {config.model.name} {dict(config.model.options)}"
    if teacher is not None:
        parts += f", the teacher {type(teacher).__name__}"
    if stepper.distiller.discriminator is not None:
        discriminator = config.gan.discriminator
        parts += f", the discriminator {discriminator.name} {dict(discriminator.options)}"
    hint = ""
    if teacher is not None and hasattr(teacher, "nz") and stepper.task.batch_fields[0] != "noise":
        task = config.task
        hint = f"; the teacher is a generator (it takes noise) but the task is {task}: use a {task} teacher"
    return (
        f"step {step}: {_last_line(error)}. The run's parts may not fit each other: {parts} "
        f"and the data {config.data.name} (items {items}); check the model's options (in_channels, "
        f"num_classes, image size) against the data{hint}"
    )


def _keep_completed(stepper: Stepper, config: RunConfig, dist: Distributed, last: Path, done: int, saved_through: int,
                    *, partial_step: bool = False) -> str:  # fmt: skip
    """After a stop outside the step loop's control: save the completed steps not saved yet (this process's
    state, when it is rank 0 and no step was left half-applied), and say what was kept and how to go on."""
    if dist.is_main and done > saved_through and not partial_step:
        _save_verifying(_checkpoint_state(stepper, config, done), last)
        saved_through = done
    if not last.exists():
        return "nothing was kept (no checkpoint was written): start the run again, without --resume"
    return f"{last} holds step {saved_through}: continue with --resume"


def _last_line(error: BaseException) -> str:
    """The message of `error`, or of the error a DataLoader worker raised (the last line of its traceback)."""
    lines = [line for line in str(error).splitlines() if line.strip()]
    last = lines[-1].strip() if lines else type(error).__name__
    return last.split(": ", 1)[1] if len(lines) > 1 and ": " in last else last


def _checkpoint_state(stepper: Stepper, config: RunConfig, done: int) -> dict:
    """What a checkpoint after step `done` holds: the step, the resolved config and every trained state."""
    return {"step": done, "config": to_dict(config), **stepper.state_dict()}


def _save_step(stepper: Stepper, config: RunConfig, dist: Distributed, last: Path, done: int) -> int:
    """Checkpoint the run after step `done` (rank 0 writes, every process waits for it); returns `done`."""
    if dist.is_main:
        _save_verifying(_checkpoint_state(stepper, config, done), last)
    dist.barrier()
    return done
