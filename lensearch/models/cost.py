"""Model cost: parameter count, FLOPs and latency, so a search can trade quality against cost.

FLOPs come from :class:`torch.utils.flop_counter.FlopCounterMode`, which counts 2 FLOPs per
multiply-accumulate of convolutions, linear layers and matmuls (elementwise ops, norms and interpolation
are not counted; bicubic therefore costs 0).
"""

from __future__ import annotations

import statistics
import time
from contextlib import contextmanager
from typing import Iterator

import torch
from torch.utils.flop_counter import FlopCounterMode


def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@contextmanager
def _eval(model: torch.nn.Module) -> Iterator[None]:
    """Evaluation mode without gradients, restoring the previous mode."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        model.train(was_training)


def _input(model: torch.nn.Module, lr_shape: tuple[int, ...]) -> torch.Tensor:
    """A fixed random input on the model's device (a private generator leaves the global RNG alone)."""
    ref = next(model.parameters(), None)
    x = torch.rand(*lr_shape, generator=torch.Generator().manual_seed(0))
    return x.to(ref.device) if ref is not None else x


def estimate_flops(model: torch.nn.Module, lr_shape: tuple[int, ...]) -> int:
    """FLOPs (2 x MACs) of one forward pass on an input of shape ``lr_shape`` = (N, C, H, W)."""
    counter = FlopCounterMode(display=False)
    with _eval(model), counter:
        model(_input(model, lr_shape))
    return int(counter.get_total_flops())


def measure_latency(model: torch.nn.Module, lr_shape: tuple[int, ...], repeats: int = 10, warmup: int = 2,
                    reduce: str = "median") -> float:
    """Wall time (ms) of one forward pass at ``lr_shape``, on the model's device: the median of ``repeats``
    timed passes, or with ``reduce="min"`` the fastest (the estimator least disturbed by other processes on a
    shared machine)."""
    x = _input(model, lr_shape)
    sync = torch.cuda.synchronize if x.device.type == "cuda" else (lambda: None)
    times = []
    with _eval(model):
        for i in range(warmup + repeats):
            sync()
            start = time.perf_counter()
            model(x)
            sync()
            if i >= warmup:
                times.append((time.perf_counter() - start) * 1e3)
    return min(times) if reduce == "min" else statistics.median(times)


def model_cost(model: torch.nn.Module, lr_shape: tuple[int, ...], repeats: int = 10) -> dict[str, float]:
    """``{"params", "flops", "latency_ms"}`` at ``lr_shape`` = (N, C, H, W)."""
    return {"params": count_params(model), "flops": estimate_flops(model, lr_shape),
            "latency_ms": measure_latency(model, lr_shape, repeats=repeats)}
