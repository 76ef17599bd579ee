"""Driving one training run on Ray: data preparation (once, on the driver), resource sizing, and the choice
between a direct single-worker run and a Ray Train ``TorchTrainer`` with DDP workers.

``run_in_trial`` is called inside a Ray Tune trial function (a search trial or ``lensearch train``):

- **1 worker**: the loop runs in the trial process itself (:class:`TuneContext`): no process group, no
  worker actors, no placement group — the ~15 s Ray Train start cost is skipped. Same loop code.
- **N > 1 workers**: a ``TorchTrainer`` whose workers run :func:`~lensearch.training.loop.train_worker`
  (gloo on CPU, NCCL on GPU); every ``ray.train.report`` becomes one Tune iteration through
  ``TuneReportCallback`` (the Train-V2-inside-Tune pattern; see the stack notes).
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lensearch.errors import expect
from lensearch.storage import is_uri
from lensearch.training.runinfo import RunInfo

TRIAL_CPU = 0.01  # what the Tune trial itself reserves when it only drives a TorchTrainer


@dataclass(frozen=True)
class Resources:
    """What one trial uses. ``use_gpu=None`` means auto (GPU when the cluster has one)."""

    workers: int = 1
    use_gpu: bool | None = None
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 1.0

    def resolved(self, cluster: dict[str, float]) -> "Resources":
        """Fit the request to the cluster so it is always feasible (a request that can never be met would
        make Ray wait forever)."""
        expect(self.workers >= 1, f"resources.workers: expected >= 1, got {self.workers}")
        gpus = cluster.get("GPU", 0.0)
        use_gpu = gpus > 0 if self.use_gpu is None else self.use_gpu
        expect(not use_gpu or gpus > 0, "resources.gpu: a GPU was requested but the Ray cluster has none")
        cpus = cluster.get("CPU", 1.0)
        overhead = TRIAL_CPU if self.workers > 1 else 0.0
        cpw = min(self.cpus_per_worker, (cpus - overhead) / self.workers)
        expect(cpw > 0.05, f"resources.workers: {self.workers} workers do not fit a cluster with {cpus:g} CPUs")
        gpw = min(self.gpus_per_worker, gpus / self.workers) if use_gpu else 0.0
        return Resources(self.workers, use_gpu, round(cpw, 3), gpw)

    def trial_bundle(self) -> dict[str, float]:
        """Resources the Tune trial reserves for itself."""
        if self.workers == 1:
            out = {"CPU": self.cpus_per_worker}
            if self.use_gpu:
                out["GPU"] = self.gpus_per_worker
            return out
        return {"CPU": TRIAL_CPU}

    def per_trial_total(self) -> dict[str, float]:
        cpu = self.cpus_per_worker * self.workers + (TRIAL_CPU if self.workers > 1 else 0.0)
        return {"CPU": cpu, "GPU": self.gpus_per_worker * self.workers if self.use_gpu else 0.0}

    def max_concurrent(self, cluster: dict[str, float]) -> int:
        need = self.per_trial_total()
        fits = [math.floor(cluster.get(k, 0.0) / v + 1e-9) for k, v in need.items() if v > 0]
        return max(1, min(fits) if fits else 1)

    @property
    def threads(self) -> int:
        return max(1, int(self.cpus_per_worker))


def prepare_data(data_cfg: dict[str, Any], root: Path, *, progress: bool = True) -> RunInfo:
    """Make sure the HDF5 file exists (simulating it from ``data_cfg['preset']`` on first use), validate it,
    and compute what every trial needs from it once: scale, channels, train statistics.

    ``data_cfg['path']`` may be a storage URI (``s3://bucket/file.h5``): the file is fetched once per node
    (:func:`lensearch.storage.fetch`) and the run info carries ``data_uri`` so trials on other nodes fetch it too.

    Returns the :class:`~lensearch.training.runinfo.RunInfo` shared by all trials (without the per-trial ``dir``).
    """
    from lensearch.data.store import open_h5, train_stats

    path = data_cfg.get("path")
    if path is None:
        non_lens = "_nonlens" if data_cfg.get("non_lens") else ""
        path = f"data/{data_cfg['preset']}_{data_cfg['count']}_seed{data_cfg['seed']}{non_lens}.h5"
    uri = str(path) if is_uri(str(path)) else None
    if uri is not None:  # object storage: a local copy here; every node fetches its own (training/remote.py)
        from lensearch.storage import fetch

        path = fetch(uri, "data")
    path = Path(path)
    if not path.is_absolute():
        path = (root / path).resolve()
    if not path.exists():
        expect(data_cfg.get("preset"), f"data.path: {path} does not exist and no data.preset is given to simulate it")
        from lensearch.data.simulate import simulate_to_h5

        path.parent.mkdir(parents=True, exist_ok=True)
        print(f"lensearch: simulating {data_cfg['count']} '{data_cfg['preset']}' images into {path} (first use)",
              flush=True)
        simulate_to_h5(path, data_cfg["preset"], int(data_cfg["count"]), int(data_cfg["seed"]),
                       include_non_lens=bool(data_cfg.get("non_lens")),
                       workers=max(1, min(2, os.cpu_count() or 1)), progress=progress)
    info = open_h5(path)
    expect(info.splits.get("train", 0) > 0 and info.splits.get("val", 0) > 0,
           f"{path}: needs non-empty train and val splits, got {info.splits}")
    return RunInfo(data_path=str(path), scale=int(info.scale),
                   in_channels=int(info.hr_shape[0]) if len(info.hr_shape) == 3 else 1,
                   has_clean=bool(info.has_clean), stats=train_stats(path), data_uri=uri)


def run_in_trial(config: dict[str, Any], run: RunInfo, resources: Resources, *, name: str) -> None:
    """Run one training inside the current Tune trial. ``resources`` must already be resolved."""
    from lensearch.training.context import TuneContext, pick_device, set_threads
    from lensearch.training.loop import fit, train_worker

    run = run.replace(threads=resources.threads)
    if resources.workers == 1:
        set_threads(resources.threads)
        fit(config, run, TuneContext(device=pick_device(resources.use_gpu)))
        return

    import ray.train
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    storage = Path(run.dir).resolve() / "ray_train"
    per_worker = {"CPU": resources.cpus_per_worker}
    if resources.use_gpu:
        per_worker["GPU"] = resources.gpus_per_worker
    trainer = TorchTrainer(
        train_worker,
        train_loop_config={"config": config, "run": run},
        scaling_config=ray.train.ScalingConfig(num_workers=resources.workers, use_gpu=bool(resources.use_gpu),
                                               resources_per_worker=per_worker),
        run_config=ray.train.RunConfig(
            name=name, storage_path=str(storage),
            callbacks=[TuneReportCallback()],
            failure_config=ray.train.FailureConfig(max_failures=0, controller_failure_limit=1),
        ),
    )
    try:
        trainer.fit()
    except Exception as err:  # surface the worker's own message (e.g. a non-finite loss) as the trial error
        died = worker_death(err)
        if died is not None:  # a worker process died: say which and how, not the peers' gloo/NCCL errors
            raise WorkerDied(died) from err
        raise RuntimeError(_root_message(err)) from err


class WorkerDied(RuntimeError):
    """A DDP worker process of the trial died (killed, out of memory, its node lost), e.g. ``worker 1 died
    (SIGKILL or out of memory)``. The search restarts the trial (``budget.max_retries``) from its checkpoint."""


# Ray's words for a process that ended without raising (checked on the dead worker's own error)
_DEATH_TYPES = ("RayActorError", "ActorDiedError", "ActorUnavailableError", "WorkerCrashedError", "NodeDiedError",
                "OutOfMemoryError", "WorkerHealthCheckFailedError")


def _died(error: BaseException) -> bool:
    """Whether ``error`` (one worker's failure in a Ray Train worker group) is that worker's process dying, as
    opposed to an error the worker raised — such as its peers' ``Connection closed by peer`` in a collective
    when another worker died."""
    inner = getattr(error, "health_check_failure", None)  # WorkerHealthCheckFailedError wraps the actor's death
    return any(type(e).__name__ in _DEATH_TYPES for e in (error, inner) if e is not None)


def how_it_died(text: str) -> str | None:
    """What Ray's text of a dead process says about the cause: a signal, out of memory, a lost node."""
    if "OutOfMemoryError" in text or "running low on memory" in text:
        return "out of memory"
    if "NodeDiedError" in text or "node died" in text.lower() or "node failure" in text.lower():
        return "node lost"
    signal = re.search(r"(?:killed by|exited from|terminated by) signal:? ?(SIG[A-Z]+|\d+)", text)
    if signal:
        name = signal.group(1)
        if name.isdigit():
            import signal as signals

            try:
                name = signals.Signals(int(name)).name
            except ValueError:
                name = f"signal {name}"
        return name
    if "exit code 2" in text or "connection error code 2" in text:  # Ray's words for a SIGKILLed worker
        return "SIGKILL or out of memory"
    for mark in ("SIGKILL", "SIGTERM", "SIGSEGV"):
        if mark in text:
            return mark
    return None


def worker_death(err: BaseException) -> str | None:
    """``"worker 1 died (SIGKILL or out of memory)"`` when Ray Train's ``err`` (a ``WorkerGroupError``) says that a
    worker's process died, naming its rank(s) and the cause; None when every failed worker raised an error of its
    own."""
    failures = getattr(err, "worker_failures", None) or {}
    dead = {rank: e for rank, e in failures.items() if _died(e)}
    if not dead:
        return None
    ranks = sorted(dead)
    how = next((h for h in (how_it_died(str(dead[r])) for r in ranks) if h), None)
    who = f"worker {ranks[0]}" if len(ranks) == 1 else f"workers {', '.join(map(str, ranks))}"
    return f"{who} died" + (f" ({how})" if how else "")


_USEFUL = ("lensearch.", "NonFiniteLoss", "RuntimeError", "ValueError", "UserError")


def error_line(text: str) -> str:
    """The innermost useful line of an error text (Ray wraps a worker's error in several layers)."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for line in reversed(lines):
        if line.startswith(_USEFUL) or "non-finite" in line:
            return line[:500]
    return (lines[-1] if lines else "unknown error")[:500]


def _root_message(err: BaseException) -> str:
    return error_line(str(err)) if str(err).strip() else type(err).__name__
