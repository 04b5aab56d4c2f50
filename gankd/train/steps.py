"""One optimizer step for each task and mode: what is trained, on which loss, with which discriminator."""

from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel

from gankd.config import RunConfig
from gankd.losses.adversarial import GANLoss

from .builders import build_model, build_optimizer, build_schedule
from .distributed import Distributed


def ema_update(decay: float):
    """EMA step with warm-up: the decay is min(decay, (1 + n) / (10 + n)) after n updates, so the average
    follows the model early on instead of keeping its random initialisation for thousands of steps."""

    def update(averaged: Tensor, current: Tensor, num_averaged: Tensor) -> Tensor:
        rate = torch.clamp((1 + num_averaged) / (10 + num_averaged), max=decay).to(averaged.dtype)
        return averaged * rate + current * (1 - rate)

    return update


class NonFiniteLoss(RuntimeError):
    """A loss term became NaN or infinite; the step was not applied."""


class Stepper:
    """The trained modules, their optimizers and the step that updates them.

    `modules` maps checkpoint names to modules ("model", and "discriminator" / "adapters" when present);
    `optimizers` and `schedules` likewise. `step(batch)` returns the logged scalars of that step.
    """

    def __init__(self, config: RunConfig, dist: Distributed, model: nn.Module, *, distiller=None,
                 discriminator: nn.Module | None = None):  # fmt: skip
        self.config, self.dist, self.device = config, dist, dist.device
        self.model, self.distiller, self.discriminator = model, distiller, discriminator
        self.modules = {"model": model}
        trained = list(distiller.student_parameters()) if distiller is not None else list(model.parameters())
        if distiller is not None and len(list(distiller.adapters.parameters())):
            self.modules["adapters"] = distiller.adapters  # student and discriminator are saved on their own
        self.trained_parameters = trained
        self.optimizers = {"model": build_optimizer(trained, config.optim)}
        self.gan_loss = GANLoss(config.gan.loss)
        if discriminator is not None:
            self.modules["discriminator"] = discriminator
            self.optimizers["discriminator"] = build_optimizer(discriminator.parameters(), config.gan.optim)
        self.schedules = {name: build_schedule(opt, config.optim if name == "model" else config.gan.optim,
                                               config.steps) for name, opt in self.optimizers.items()}  # fmt: skip
        use_fp16 = config.precision == "fp16"
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=use_fp16)
        self.ema = None
        if config.ema > 0:
            self.ema = AveragedModel(model, avg_fn=ema_update(config.ema), use_buffers=True)
        self.noise = torch.Generator()

    # -- inputs -----------------------------------------------------------------------------------------------

    def autocast(self):
        if self.config.precision == "fp32":
            return nullcontext()
        dtype = torch.bfloat16 if self.config.precision == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    def generator_inputs(self, labels: Tensor, step: int) -> tuple[Tensor, Tensor | None]:
        # Noise seeded by (seed, rank, step): every process draws its own, and a resumed run draws the same.
        self.noise.manual_seed((self.config.seed * 1_000_003 + self.dist.rank) * 1_000_003 + step)
        noise = torch.randn(labels.shape[0], self.model.nz, generator=self.noise).to(self.device)
        return noise, (labels if getattr(self.model, "num_classes", 0) else None)

    def _discriminate(self, images: Tensor, labels: Tensor | None) -> Tensor:
        return self.discriminator(images, labels) if labels is not None else self.discriminator(images)

    # -- the step ---------------------------------------------------------------------------------------------

    def step(self, batch, step: int) -> dict[str, float]:
        """One optimizer step (and discriminator step) on `batch`, the `step`-th of the run (0-based)."""
        first, second = (item.to(self.device, non_blocking=True) for item in batch)
        task, mode = self.config.task, self.config.mode
        if self.discriminator is not None:
            self.discriminator.requires_grad_(False)  # the generator step needs D's input gradients only
        with self.autocast():
            labels = second if task == "generator" and getattr(self.model, "num_classes", 0) else None
            if mode == "distill":
                distill_batch = self.generator_inputs(second, step) if task == "generator" else (first, second)
                terms = dict(self.distiller(distill_batch))
                fake = self.distiller.last_student_output
                total = terms.pop("total")
            elif task == "classifier":
                terms = {"ce": F.cross_entropy(self.model(first), second)}
                total, fake = terms["ce"], None
            else:
                fake = self.model(*self.generator_inputs(second, step)) if task == "generator" else self.model(first)
                terms = {}
                if task == "image2image":
                    terms["l1"] = F.l1_loss(fake.float(), second.float())
                if self.discriminator is not None:
                    terms["adversarial"] = self.gan_loss.generator(self._discriminate(fake, labels).float())
                total = terms.get("l1", 0.0) + self.config.gan.weight * terms.get("adversarial", 0.0)
        self._check_finite(total, terms)
        self._apply("model", total, self.trained_parameters)
        scalars = {name: value.item() for name, value in terms.items()} | {"loss": total.item()}
        if self.discriminator is not None and fake is not None:
            real = first if task == "generator" else second
            scalars["d_loss"] = self._discriminator_step(real, fake.detach(), labels)
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        for module in self.modules.values():
            self.dist.sync_from_main(module, buffers_only=True)
        scalars["lr"] = self.schedules["model"].get_last_lr()[0]
        return scalars

    def _discriminator_step(self, real: Tensor, fake: Tensor, labels: Tensor | None) -> float:
        self.discriminator.requires_grad_(True)
        with self.autocast():
            # Real and fake in separate forwards, as in the generator step: a batch-norm discriminator must not
            # see statistics here that it never sees when judging fakes for the generator.
            real_logits = self._discriminate(real, labels).float()
            fake_logits = self._discriminate(fake, labels).float()
            loss = self.gan_loss.discriminator(real_logits, fake_logits)
        self._check_finite(loss, {"d_loss": loss})
        self._apply("discriminator", loss, list(self.discriminator.parameters()))
        return loss.item()

    def _apply(self, name: str, loss: Tensor, parameters: list[nn.Parameter]) -> None:
        optimizer = self.optimizers[name]
        optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.dist.average_gradients(parameters)
        clip = self.config.optim.grad_clip if name == "model" else self.config.gan.optim.grad_clip
        if clip > 0:
            self.scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(parameters, clip)
        self.scaler.step(optimizer)
        self.scaler.update()
        self.schedules[name].step()

    def _check_finite(self, total: Tensor, terms: dict) -> None:
        finite = torch.isfinite(total.detach()).float().reshape(1)
        if self.dist.enabled:  # every process stops together, so none waits forever in an all-reduce
            torch.distributed.all_reduce(finite, op=torch.distributed.ReduceOp.MIN)
        if not finite.item():
            values = ", ".join(f"{name}={float(value.detach()):.4g}" for name, value in terms.items())
            raise NonFiniteLoss(f"the loss is {float(total.detach())} ({values})")

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


def build_stepper(config: RunConfig, dist: Distributed, teacher_state: dict | None = None) -> Stepper:
    """Models (and for distillation the frozen teacher, Distiller and warm-started discriminator) for a run."""
    torch.manual_seed(config.seed)
    model = build_model(config.model).to(dist.device)
    discriminator = None
    uses_gan = config.task in ("generator", "image2image") and (
        config.gan.weight > 0 if config.mode != "distill" else config.distill.weights.get("adversarial", 0) > 0
    )
    if uses_gan:
        discriminator = build_model(config.gan.discriminator).to(dist.device)
    distiller = None
    if config.mode == "distill":
        from gankd.distill import Distiller

        teacher = build_model(teacher_state["model_config"]).to(dist.device)
        teacher.load_state_dict(teacher_state["weights"])
        if discriminator is not None and config.distill.discriminator_from_teacher:
            if teacher_state.get("discriminator") is None:
                raise ValueError("config.distill.discriminator_from_teacher is true but the teacher run has no "
                                 "discriminator: set it to false or distil from a GAN teacher")  # fmt: skip
            discriminator.load_state_dict(teacher_state["discriminator"])
        distill = config.distill
        distiller = Distiller(
            teacher, model, task=config.task, feature_pairs=distill.feature_pairs or None, weights=distill.weights,
            output_kind=distill.output_kind, feature_kind=distill.feature_kind, attention_p=distill.attention_p,
            temperature=distill.temperature, adversarial=config.gan.loss, discriminator=discriminator,
            lpips_net=distill.lpips_net, lpips_weights=distill.lpips_weights, impl=distill.impl,
            conditional_discriminator=getattr(discriminator, "num_classes", 0) > 0,
        ).to(dist.device)  # fmt: skip
    for module in (model, discriminator, distiller):
        if module is not None:
            dist.sync_from_main(module)
    return Stepper(config, dist, model, distiller=distiller, discriminator=discriminator)
