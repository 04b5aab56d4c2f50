"""Data-parallel training over torch.distributed, launched with torchrun (NCCL on GPUs, gloo on CPUs).

Each process trains on its own shard of every epoch (a DistributedSampler); after each backward the
gradients of every trained tensor are averaged across processes in one flat all-reduce, and buffers
(BatchNorm statistics) are taken from rank 0 after each step. This is what DistributedDataParallel does,
done by hand because a distillation step trains several modules (student, adapters, discriminator) in
alternating backward passes that DDP's one-forward-one-backward reducer does not fit. Only rank 0 writes.
"""

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

    def average_gradients(self, parameters) -> None:
        if not self.enabled:
            return
        grads = [p.grad for p in parameters if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1).float() for g in grads])
        dist.all_reduce(flat)
        flat /= self.world_size
        offset = 0
        for grad in grads:
            grad.copy_(flat[offset : offset + grad.numel()].view_as(grad))
            offset += grad.numel()

    def sync_from_main(self, *modules: nn.Module, buffers_only: bool = False) -> None:
        """Copy rank 0's parameters (unless buffers_only) and buffers to every process."""
        if not self.enabled:
            return
        for module in modules:
            tensors = list(module.buffers()) if buffers_only else [*module.parameters(), *module.buffers()]
            for tensor in tensors:
                dist.broadcast(tensor.data, src=0)

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
