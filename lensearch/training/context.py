"""Where a training loop runs: the few things that differ between a Ray Train worker, a single-worker Tune
trial and a plain process (tests, benchmarks).

The loop only talks to a :class:`RunContext`: its rank and world size, its device, ``wrap`` (DDP or not),
``all_reduce_sum`` and ``report``. Ray stays at these edges, so the loop itself is plain PyTorch.
"""

from __future__ import annotations

import os
from typing import Any, Callable

import torch
import torch.distributed as dist


def pick_device(use_gpu: bool | None) -> torch.device:
    """``None`` = auto: CUDA when present."""
    if use_gpu is None:
        use_gpu = torch.cuda.is_available()
    return torch.device("cuda" if use_gpu and torch.cuda.is_available() else "cpu")


class RunContext:
    """Single process, no Ray: reports go to ``report_fn`` (tests, benchmarks)."""

    rank = 0
    world_size = 1

    def __init__(self, device: torch.device | None = None, report_fn: Callable[[dict], None] | None = None):
        self.device = device or pick_device(None)
        self._report_fn = report_fn

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def wrap(self, module: torch.nn.Module) -> torch.nn.Module:
        return module.to(self.device)

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor

    def barrier(self) -> None:
        pass

    def report(self, metrics: dict[str, Any]) -> None:
        if self._report_fn is not None:
            self._report_fn(dict(metrics))


class TuneContext(RunContext):
    """A single-worker trial run directly in the Tune trial process: no process group, no worker actors."""

    def report(self, metrics: dict[str, Any]) -> None:
        import ray
        from ray import tune

        # which Ray node ran the trial (on a multi-node cluster; Tune's own node_ip is one per host)
        tune.report({**metrics, "node_id": ray.get_runtime_context().get_node_id()})


class RayTrainContext(RunContext):
    """A Ray Train worker inside ``TorchTrainer``: DDP over the process group Ray Train set up."""

    def __init__(self):
        import ray.train
        import ray.train.torch

        ctx = ray.train.get_context()
        self.rank = ctx.get_world_rank()
        self.world_size = ctx.get_world_size()
        self.device = ray.train.torch.get_device()
        self._report_fn = None

    def wrap(self, module: torch.nn.Module) -> torch.nn.Module:
        module = module.to(self.device)
        if self.world_size == 1 or not any(p.requires_grad for p in module.parameters()):
            return module
        ids = [self.device.index] if self.device.type == "cuda" else None
        return torch.nn.parallel.DistributedDataParallel(module, device_ids=ids)

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.world_size > 1:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()

    def report(self, metrics: dict[str, Any]) -> None:
        import ray.train

        ray.train.report(dict(metrics))


def unwrap(module: torch.nn.Module) -> torch.nn.Module:
    """The plain module under a DDP wrapper."""
    return module.module if isinstance(module, torch.nn.parallel.DistributedDataParallel) else module


def set_threads(num: int | None) -> None:
    """Limit intra-op threads to the CPUs this worker was given (oversubscription is slow on few cores)."""
    if num and num > 0:
        torch.set_num_threads(int(num))
        os.environ.setdefault("OMP_NUM_THREADS", str(int(num)))
