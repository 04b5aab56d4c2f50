"""Measured cost of running a model: latency, throughput and peak memory (MACs alone mislead)."""

import statistics
import time
from collections.abc import Callable

import torch
from torch import nn


def _timed(run: Callable[[], object], device: torch.device) -> float:
    """Milliseconds of one call, synchronizing CUDA around it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    run()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - start) * 1e3


@torch.no_grad()
def measure_latency(
    model: nn.Module,
    make_input: Callable[[int], tuple],
    *,
    batch_sizes: tuple[int, ...] = (1, 64),
    warmup: int = 3,
    repeats: int = 10,
) -> list[dict]:
    """Median latency of `model(*make_input(batch))` per batch size, after warm-up, in eval mode.

    Returns one dict per batch size: batch, latency_ms (median), throughput (images/s), peak_memory_mb
    (CUDA only: peak allocated above what was allocated before the call; None on other devices), device.
    """
    if warmup < 0 or repeats < 1:
        raise ValueError(f"warmup must be >= 0 and repeats >= 1, got warmup={warmup}, repeats={repeats}")
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    was_training = model.training
    model.eval()
    results = []
    try:
        for batch in batch_sizes:
            inputs = make_input(batch)
            for _ in range(warmup):
                model(*inputs)
            peak_mb = None
            if device.type == "cuda":
                torch.cuda.synchronize(device)
                baseline = torch.cuda.memory_allocated(device)
                torch.cuda.reset_peak_memory_stats(device)
            times = [_timed(lambda batch_inputs=inputs: model(*batch_inputs), device) for _ in range(repeats)]
            if device.type == "cuda":
                peak_mb = (torch.cuda.max_memory_allocated(device) - baseline) / 1e6
            latency = statistics.median(times)
            results.append(dict(batch=batch, latency_ms=latency, throughput=batch / latency * 1e3,
                                peak_memory_mb=peak_mb, device=str(device)))  # fmt: skip
    finally:
        model.train(was_training)
    return results
