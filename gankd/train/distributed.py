"""Data-parallel training with torch's DistributedDataParallel, launched by torchrun (NCCL on GPUs, gloo on
CPUs, one or several nodes).

Each process trains on its own shard of every epoch (a DistributedSampler). Each trained side of a step —
the student with the terms' adapters, and the discriminator — is one module wrapped in DDP
(gankd.distill.StudentPhase and DiscriminatorPhase), so its gradients are averaged across processes in
buckets that overlap its backward, and its buffers (batch norm statistics) are broadcast from rank 0 at
each forward. With optim.accumulate > 1 the micro-batches before the last run under `no_sync`. Only
rank 0 writes.
"""

import contextlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass
class Distributed:
    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def wrap(self, module: nn.Module, *, find_unused_parameters: bool = False) -> nn.Module:
        """`module` in DistributedDataParallel when several processes train, else as it is.
        `find_unused_parameters`: some parameters may get no gradient in a step (DDP then looks for them)."""
        if not self.enabled:
            return module
        device_ids = [self.device] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(module, device_ids=device_ids,
                                                   find_unused_parameters=find_unused_parameters)  # fmt: skip

    def gradient_sync(self, module: nn.Module, sync: bool):
        """A context in which `module`'s forward and backward average gradients across processes only
        when `sync` (the last micro-batch of a step); a no-op for an unwrapped module."""
        if sync or not isinstance(module, nn.parallel.DistributedDataParallel):
            return contextlib.nullcontext()
        return module.no_sync()

    def all_finite(self, value: torch.Tensor) -> bool:
        """Whether `value` is finite on every process (each process gets the same answer)."""
        finite = torch.isfinite(value.detach()).all().float().reshape(1)
        if self.enabled:  # every process stops together, so none waits forever in an all-reduce
            dist.all_reduce(finite, op=dist.ReduceOp.MIN)
        return bool(finite.item())

    def any(self, flag: bool) -> bool:
        """Whether `flag` is true on some process (each process gets the same answer)."""
        if not self.enabled:
            return flag
        tensor = torch.tensor([float(flag)], device=self.device)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return bool(tensor.item())

    def all_mean(self, value: float) -> float:
        if not self.enabled:
            return value
        tensor = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor)
        return tensor.item() / self.world_size

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"config.device is {name!r} but no CUDA device is available (use 'cpu' or 'auto')")
    return device


def setup(device_name: str) -> Distributed:
    """The process group when launched by torchrun (WORLD_SIZE > 1), else a single process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Distributed(device=resolve_device(device_name))
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name)
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Distributed(rank=rank, world_size=world_size, device=device)


def teardown(state: Distributed) -> None:
    if state.enabled and dist.is_initialized():
        dist.destroy_process_group()
