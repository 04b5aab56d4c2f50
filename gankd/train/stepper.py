"""One optimizer step of a run: the Distiller's student phase, then its discriminator phase, each over the
step's micro-batches, each side in DistributedDataParallel. No loss logic lives here: the objective
(gankd.distill.Distiller) owns every term and the discriminator's loss."""

from __future__ import annotations

from contextlib import nullcontext

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel

from gankd.config import RunConfig
from gankd.distill import DiscriminatorPhase, Distiller, StudentPhase

from .builders import build_optimizer, build_schedule, step_positions
from .distributed import Distributed

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}  # autocast dtype of each precision


def ema_update(decay: float):
    """EMA step with warm-up: the decay is min(decay, (1 + n) / (10 + n)) after n updates, so the average
    follows the model early on instead of keeping its random initialisation for thousands of steps."""

    def update(averaged: Tensor, current: Tensor, num_averaged: Tensor) -> Tensor:
        rate = torch.clamp((1 + num_averaged) / (10 + num_averaged), max=decay).to(averaged.dtype)
        return averaged * rate + current * (1 - rate)

    return update


class NonFiniteLoss(RuntimeError):
    """A loss became NaN or infinite; the step was not applied."""


class Stepper:
    """The objective of a run, its optimizers, schedules, gradient scaler and EMA, and the step.

    `modules` maps checkpoint names to what is saved: "model" (the student), "terms" (their parameters:
    adapters) and "discriminator" when there is one. `step(micro_batches, step)` returns the step's
    logged scalars: each term, "loss" (their weighted total), "d_loss" and "lr".
    """

    def __init__(self, config: RunConfig, dist: Distributed, distiller: Distiller):
        self.config, self.dist, self.device = config, dist, dist.device
        self.distiller, self.task, self.model = distiller, distiller.task, distiller.student
        self.discriminator = distiller.discriminator
        self.modules = {"model": self.model, "terms": distiller.terms}
        # Terms on tapped features alone leave the student's layers after the last tap without gradients.
        features_only = not any(term.reads_output for term in distiller.terms.values())
        self.student_phase = dist.wrap(StudentPhase(distiller), find_unused_parameters=features_only)
        self.trained_parameters = list(distiller.student_parameters())
        self.optimizers = {"model": build_optimizer(self.trained_parameters, config.optim)}
        self.clip = {"model": config.optim.grad_clip}
        self.discriminator_phase = None
        if self.discriminator is not None:
            self.modules["discriminator"] = self.discriminator
            self.discriminator_phase = dist.wrap(DiscriminatorPhase(distiller))
            self.optimizers["discriminator"] = build_optimizer(self.discriminator.parameters(), config.gan.optim)
            self.clip["discriminator"] = config.gan.optim.grad_clip
        optim = {"model": config.optim, "discriminator": config.gan.optim}
        self.schedules = {name: build_schedule(opt, optim[name], config.steps) for name, opt in self.optimizers.items()}
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=config.precision == "fp16")
        self._noise: tuple = (None, None)  # ((step, dims), the step's global noise)
        self.ema = None
        if config.ema > 0:
            self.ema = AveragedModel(self.model, avg_fn=ema_update(config.ema), use_buffers=True)

    def autocast(self):
        dtype = PRECISIONS[self.config.precision]
        return nullcontext() if dtype is None else torch.autocast(self.device.type, dtype=dtype)

    def noise(self, step: int, micro_batch: int, batch_size: int):
        """draw_noise(dims) for one micro-batch: each sample's noise depends only on (seed, step, its position
        in the step's global batch), so 2 processes × B, 1 × 2B and 2 micro-batches × B draw the same noise
        for the same samples, and a resumed run draws what an uninterrupted one would."""

        def draw(dims: int) -> Tensor:
            key = (step, dims)
            if self._noise[0] != key:  # the step's global noise, once per step; the stream runs always drew
                generator = torch.Generator().manual_seed(self.config.seed * 1_000_003**2 + step)
                count = self.dist.world_size * self.config.optim.accumulate * batch_size
                self._noise = (key, torch.randn(count, dims, generator=generator))
            return self._noise[1][step_positions(self.dist, micro_batch, batch_size)].to(self.device)

        return draw

    # -- the step ---------------------------------------------------------------------------------------------

    def step(self, micro_batches: list, step: int) -> dict[str, float]:
        """One optimizer step of the student (and of the discriminator) on the step's micro-batches, the
        `step`-th of the run (0-based).

        Each micro-batch's loss is weighted by its share of the step's samples, so the accumulated gradient
        is that of the mean over all of them (not a mean of per-micro-batch means). Both phases' gradients
        are computed before either update is applied, so a NaN in either stops the step with no update; the
        discriminator judges the fakes of the student before its update, as in the alternating GAN step.
        """
        items = [tuple(part.to(self.device, non_blocking=True) for part in batch) for batch in micro_batches]
        shares = _shares(items)
        if self.discriminator is not None:
            self.discriminator.requires_grad_(False)  # the student's phase needs D's input gradients only
        logged, judged = {}, []
        for index, (batch_items, share) in enumerate(zip(items, shares, strict=True)):
            batch = self.task.from_data(batch_items, self.model, self.noise(step, index, len(batch_items[0])))
            with self.dist.gradient_sync(self.student_phase, index == len(items) - 1):
                with self.autocast():
                    terms = self.student_phase(batch)
                self.scaler.scale(terms.total * share).backward()
            for name, value in terms.items():
                logged[name] = logged.get(name, 0.0) + share * value.detach()
            real = self.task.real_images(batch_items)
            if self.discriminator is not None and real is not None:
                judged.append((real, self.distiller.last_student_output, self.distiller.last_condition))
        total = logged.pop("total")
        self._check_finite(total, logged)
        discriminator_loss = self._discriminator_backward(judged, shares) if judged else None
        self._apply("model", self.trained_parameters)
        if discriminator_loss is not None:
            self._apply("discriminator", list(self.discriminator.parameters()))
        self.scaler.update()  # once per step, after every optimizer stepped (torch's rule for several optimizers)
        scalars = dict(zip(logged, torch.stack(list(logged.values())).tolist(), strict=True)) | {"loss": total.item()}
        if discriminator_loss is not None:
            scalars["d_loss"] = discriminator_loss
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        scalars["lr"] = self.schedules["model"].get_last_lr()[0]
        return scalars

    def _discriminator_backward(self, judged: list, shares: list[float]) -> float:
        self.discriminator.requires_grad_(True)
        loss_sum = 0.0
        for index, ((real, fake, condition), share) in enumerate(zip(judged, shares, strict=True)):
            with self.dist.gradient_sync(self.discriminator_phase, index == len(judged) - 1):
                with self.autocast():
                    loss = self.discriminator_phase(real, fake, condition, condition)
                self.scaler.scale(loss * share).backward()
            loss_sum = loss_sum + share * loss.detach()
        self._check_finite(loss_sum, {"d_loss": loss_sum})
        return float(loss_sum)

    def _apply(self, name: str, parameters: list[nn.Parameter]) -> None:
        optimizer = self.optimizers[name]
        if self.clip[name] > 0:
            self.scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(parameters, self.clip[name])
        self.scaler.step(optimizer)
        optimizer.zero_grad(set_to_none=True)
        self.schedules[name].step()

    def _check_finite(self, total: Tensor, terms: dict) -> None:
        if not self.dist.all_finite(total):
            for optimizer in self.optimizers.values():
                optimizer.zero_grad(set_to_none=True)
            values = ", ".join(f"{name}={float(value):.4g}" for name, value in terms.items())
            raise NonFiniteLoss(f"the loss is {float(total)} ({values})")

    # -- checkpoint state --------------------------------------------------------------------------------------

    def state_dict(self) -> dict:
        """Everything a resume needs; "model", "ema" and "discriminator" are also what eval and export read."""
        state = {"discriminator": None} | {name: module.state_dict() for name, module in self.modules.items()}
        state["optimizers"] = {name: opt.state_dict() for name, opt in self.optimizers.items()}
        state["schedules"] = {name: schedule.state_dict() for name, schedule in self.schedules.items()}
        state["scaler"] = self.scaler.state_dict()
        state["ema"] = self.ema.state_dict() if self.ema is not None else None
        cuda_rng = torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None
        state["rng"] = {"torch": torch.get_rng_state(), "cuda": cuda_rng}
        return state

    def load_state_dict(self, state: dict) -> None:
        for name, module in self.modules.items():
            module.load_state_dict(state[name])
        for name, opt in self.optimizers.items():
            opt.load_state_dict(state["optimizers"][name])
        for name, schedule in self.schedules.items():
            schedule.load_state_dict(state["schedules"][name])
        self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None and state.get("ema") is not None:
            self.ema.load_state_dict(state["ema"])
        torch.set_rng_state(state["rng"]["torch"].cpu())
        if state["rng"]["cuda"] is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["rng"]["cuda"].cpu(), self.device)

    def eval_model(self) -> nn.Module:
        """The model to evaluate and export: the EMA copy when one is kept."""
        return self.ema.module if self.ema is not None else self.model


def _shares(items: list[tuple[Tensor, ...]]) -> list[float]:
    sizes = [len(batch[0]) for batch in items]
    return [size / sum(sizes) for size in sizes]
