"""How long a search's trials will take on this machine, measured before Ray starts.

For each model branch of the space, at its costliest sizes (every distribution's high end), the driver
times a few optimizer steps at the trial's batch and patch size and one validation pass, with the threads a
trial gets. From those it estimates one full trial (``max_epochs`` reports of ``steps_per_epoch`` steps plus
validation, plus the per-trial start cost) and says, in one line each, what the budget buys, and when not
even one full trial of a model fits the search's time budget.

Timings are rough (a few steps, other processes on the machine): they are for sizing, not reporting.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from lensearch.training.runinfo import RunInfo

# Per-trial start cost measured on 2 CPU cores (experiments/benchmarks/bench_search.py): ~3 s for a direct
# single-worker trial, ~20 s for a TorchTrainer with DDP workers.
START_COST_S, DDP_START_COST_S = 3.0, 20.0


@dataclass
class ModelEstimate:
    model: str
    step_s: float        # one optimizer step (generator and, for GANs, discriminator)
    val_s: float         # one validation pass over the trial's validation images
    trial_s: float       # one full trial, start cost included


def _time(fn, repeats: int) -> float:
    fn()  # warm-up (allocations, first-call paths)
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t0) / repeats


def estimate_model(config: dict[str, Any], run_info: RunInfo, *, max_epochs: int, threads: int,
                   workers: int, n_train: int, n_val: int, lr_size: tuple[int, int]) -> ModelEstimate:
    """Time one configuration (a resolved run configuration) on the driver's CPU."""
    from lensearch.models import registry
    from lensearch.training.config import split_choice

    name, params = split_choice(config["model"], "model")
    spec = registry.get(name)
    scale, channels = run_info.scale, run_info.in_channels
    tcfg = config["train"]
    model = registry.build(name, scale=scale, in_channels=channels, **params)
    bs = tcfg["batch_size"]
    side = (tcfg["patch_size"] // scale) if tcfg["patch_size"] else None
    h, w = (side, side) if side else lr_size
    lr = torch.rand(bs, channels, h, w)
    hr = torch.rand(bs, channels, h * scale, w * scale)
    previous = torch.get_num_threads()
    torch.set_num_threads(max(1, threads))
    try:
        step_s = 0.0
        if spec.kind != "interp":
            opt = torch.optim.Adam(model.parameters(), lr=1e-4)

            def step():
                opt.zero_grad()
                loss = model.training_loss(lr, hr) if spec.kind == "diffusion" else F.l1_loss(model(lr), hr)
                loss.backward()
                opt.step()

            step_s = _time(step, 2)
            if spec.kind == "gan":  # a discriminator step and the generator's adversarial pass: about 2x
                step_s *= 2.0
        model.eval()
        # one image, timed once (a diffusion model samples at every validation: this can be the big cost)
        val_lr = torch.rand(1, channels, *lr_size)
        with torch.no_grad():
            t0 = time.perf_counter()
            model(val_lr)
            val_s = (time.perf_counter() - t0) * n_val
    finally:
        torch.set_num_threads(previous)
    steps = tcfg["steps_per_epoch"] or math.ceil(n_train / (bs * workers))
    start = START_COST_S if workers == 1 else DDP_START_COST_S
    trial_s = start + max_epochs * (steps * step_s / (workers ** 0.5) + val_s / workers)
    return ModelEstimate(name, step_s, val_s, trial_s)


def estimate_search(search, run_info: RunInfo, *, budget: dict[str, Any], threads: int, workers: int,
                    concurrency: int) -> tuple[list[ModelEstimate], list[str]]:
    """Per-model estimates for the space's costliest sizes, and the lines to print about them."""
    from lensearch.data.store import open_h5
    from lensearch.training.config import resolve_run_config

    info = open_h5(run_info.data_path)
    n_val = info.splits.get("val", 0)
    seen, estimates = set(), []
    for config in search.space.representatives(last=True):
        name = config["model"]["name"] if isinstance(config.get("model"), dict) else config.get("model")
        if name in seen:
            continue
        seen.add(name)
        config = resolve_run_config(config)
        val_cap = config["train"]["val_max_images"]
        estimates.append(estimate_model(
            config, run_info, max_epochs=budget["max_epochs"], threads=threads, workers=workers,
            n_train=info.splits.get("train", 0), n_val=min(n_val, val_cap) if val_cap else n_val,
            lr_size=info.lr_shape))
    lines = []
    if not estimates:
        return estimates, lines
    parts = ", ".join(f"{e.model} ~{e.trial_s:.0f}s" for e in estimates)
    mean = sum(e.trial_s for e in estimates) / len(estimates)
    total = budget["num_samples"] * mean / max(1, concurrency)
    lines.append(f"estimate (largest sizes, this machine): one full trial: {parts}; {budget['num_samples']} full "
                 f"trials would take ~{total / 60:.1f} min at {concurrency} at once (early stopping cuts most)")
    limit = budget.get("time_budget_s")
    if limit:
        too_slow = [e for e in estimates if e.trial_s > limit]
        if too_slow:
            lines.append(f"warning: budget.time_budget_s={limit:g}s cannot finish one full trial of "
                         f"{', '.join(e.model for e in too_slow)} (~{max(e.trial_s for e in too_slow):.0f}s): "
                         f"those trials will be cut at the budget; lower budget.max_epochs or train.steps_per_epoch, "
                         f"or the model sizes")
        else:
            lines.append(f"time budget {limit / 60:.1f} min: room for ~{limit * concurrency / mean:.0f} full trials "
                         f"of the average model")
    return estimates, lines
