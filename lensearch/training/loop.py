"""The training loop that every run and every search trial executes on each worker.

``train_worker(payload)`` is the function Ray Train runs on each worker (``payload = {"config": run
config, "run": RunInfo}``); :func:`fit` is the same loop for any :class:`RunContext` (a single-worker
Tune trial, or a plain process in tests and benchmarks).

One epoch = one report. An epoch is one pass over the training split, or ``train.steps_per_epoch`` optimizer
steps on random draws (with replacement) when that is set; ``train.patch_size`` trains on random aligned
patches rather than whole images (the SR field's standard, and what makes CPU training fast). Validation
always scores whole images. Each report carries ``epoch``, ``steps`` (optimizer steps so far),
``train_seconds`` (training time so far), ``train_loss``, ``lr``, ``epoch_time_s``,
``images_per_s`` (training images per second over all workers), and the validation metrics
``val_psnr``, ``val_ssim``, ``val_mse``, ``val_loss`` (plus ``*_clean`` against noise-free HR when the
file holds it), ``val_downstream_auc`` when the run carries a frozen classifier (``run.downstream``, see
:mod:`lensearch.training.frozen_classifier`), and the model's cost: ``params``, ``flops`` (and ``latency_ms``
when asked for). When the run
knows the bicubic reference and noise ceiling of its validation images (``run.reference``), it also reports
``val_psnr_gain`` (dB over bicubic) and ``val_gap_closed`` (the share of the bicubic -> noise-ceiling gap).
Validation metrics are summed over *all* workers' shards and divided by the global
count, on images put back into data units (normalization inverted) and unit-scaled by the reference HR
(the DeepLense convention, see :mod:`lensearch.metrics`); the split is scored by
:func:`lensearch.evaluation.stream_split`, as the export and the interpolation baselines score theirs.

Checkpoints live in ``run.dir/checkpoints``: ``last.pt`` every epoch and ``best.pt`` when the
monitored metric improves, written by rank 0 atomically. A run that finds ``last.pt`` continues after
its epoch (resume after an interruption). The sample grid of the best epoch, ``samples.png``, is drawn where the
run may end (:class:`GridSchedule`).
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler, Sampler, Subset

from lensearch.data.store import SRDataset
from lensearch.data.transforms import build_augment, build_normalization
from lensearch.models import registry
from lensearch.models.cost import count_params, estimate_flops, measure_latency
from lensearch.training.checkpoint import capture_rng_state, load_checkpoint, restore_rng_state, save_checkpoint
from lensearch.training.config import MONITORABLE, split_choice
from lensearch.training.context import RayTrainContext, RunContext, set_threads
from lensearch.training.ema import WarmEMA
from lensearch.training.losses import build_generator_loss
from lensearch.training.optim import build_schedules
from lensearch.training.remote import checkpoint_location, localize_run, publish_checkpoint, stored_dir
from lensearch.training.runinfo import RunInfo
from lensearch.training.steps import STEPS, Amp

SAMPLE_GRID = "samples.png"


def train_worker(payload: dict[str, Any]) -> None:
    """Entry point for Ray Train workers (``TorchTrainer(train_loop_per_worker=train_worker)``)."""
    set_threads(payload["run"].threads)
    fit(payload["config"], payload["run"], RayTrainContext())


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))


class DrawSampler(Sampler):
    """``count`` indices drawn uniformly with replacement, a different seeded stream per rank and epoch.

    Used when an epoch is a fixed number of optimizer steps (``train.steps_per_epoch``) rather than a pass
    over the data: with random patches every draw is a new sample anyway.
    """

    def __init__(self, n: int, count: int, seed: int, rank: int):
        self.n, self.count, self.seed, self.rank, self.epoch = n, count, seed, rank, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch * 1009 + self.rank)
        return iter(torch.randint(self.n, (self.count,), generator=g).tolist())

    def __len__(self) -> int:
        return self.count


def _loader(dataset, ctx: RunContext, batch_size: int, *, workers: int, seed: int, steps_per_epoch: int = 0):
    """Training data: ``steps_per_epoch`` batches of random draws per rank, or a DistributedSampler pass over
    all ranks."""
    if steps_per_epoch:
        sampler = DrawSampler(len(dataset), steps_per_epoch * batch_size, seed, ctx.rank)
        return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers, drop_last=True,
                          persistent_workers=workers > 0)
    sampler = DistributedSampler(dataset, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True,
                                 seed=seed, drop_last=ctx.world_size > 1)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                      drop_last=len(dataset) // ctx.world_size > batch_size, persistent_workers=workers > 0)


def _monitored(metrics: dict[str, float], name: str) -> float:
    value = metrics.get(name)
    if value is None:
        raise ValueError(f"train.monitor: {name} is not reported (no hr_clean in the data?)")
    return value


def _fault_point(run: RunInfo, epoch: int, ctx: RunContext) -> None:
    """Fault-injection hook for tests: ``run.kill_at_epoch`` (set by the search driver from the environment
    variable ``LENSEARCH_TEST_KILL_AT_EPOCH``) kills the last rank's process with SIGKILL once that epoch's
    checkpoint is written and before it is reported, on the first attempt only (a marker file in the run dir).
    With several workers it waits a few seconds first: Ray Train collects reports by polling, and a worker that
    dies within one poll of a report takes that report with it, which would make the test's epochs depend on
    timing."""
    if run.kill_at_epoch != epoch or ctx.rank != ctx.world_size - 1:
        return
    marker = Path(run.dir) / ".fault_injected"
    if marker.exists():
        return
    marker.write_text(f"SIGKILL at epoch {epoch}\n")
    if ctx.world_size > 1:  # let Ray Train's controller collect the reports already made (it polls every 2 s)
        time.sleep(3.0)
    import signal

    os.kill(os.getpid(), signal.SIGKILL)


def fit(config: dict[str, Any], run: RunInfo, ctx: RunContext) -> dict[str, Any]:
    """Train ``config`` (a resolved run configuration) on ``run`` (:class:`~lensearch.training.runinfo.RunInfo`:
    the data file, ``dir`` the checkpoint/artifact directory, ...); returns the last epoch's metrics."""
    run = localize_run(run)  # a run stored at a URI (or with remote data): node-local copies (training/remote.py)
    if run.dir is None:
        raise ValueError("fit: the run info has no dir (the run's checkpoint folder)")
    tcfg = config["train"]
    seed = int(tcfg["seed"])
    _seed_everything(seed + ctx.rank)
    run_dir = Path(run.dir)
    ckpt_dir = run_dir / "checkpoints"

    model_name, model_params = split_choice(config["model"], "model")
    spec = registry.get(model_name)
    generator = registry.build(model_name, scale=run.scale, in_channels=run.in_channels, **model_params)
    norm = build_normalization(config["normalization"], run.stats)
    gen_loss = build_generator_loss(config["loss"]).set_normalization(norm)
    amp = Amp(tcfg["amp"], ctx.device)
    step = STEPS[spec.kind].create(ctx, generator, config, gen_loss, amp, spec=spec,
                                   in_channels=run.in_channels)

    with_clean = bool(run.has_clean)
    train_set = SRDataset(run.data_path, split="train", augment=build_augment(config["augment"]),
                          with_clean=False, patch_size=tcfg["patch_size"],
                          in_memory=bool(tcfg["patch_size"]) and _fits_in_memory(run.data_path))
    val_set = SRDataset(run.data_path, split="val", with_clean=with_clean)
    if tcfg["val_max_images"] and len(val_set) > tcfg["val_max_images"]:
        val_set = Subset(val_set, list(range(tcfg["val_max_images"])))
    scorer = None  # the downstream objective: a frozen classifier scores the SR validation images
    if run.downstream:
        from lensearch.training.frozen_classifier import DownstreamScorer

        rows = (val_set.dataset if isinstance(val_set, Subset) else val_set).rows[:len(val_set)]
        scorer = DownstreamScorer(run.downstream["path"], run.data_path, rows, ctx.device)
    bs = tcfg["batch_size"]
    train_loader = _loader(train_set, ctx, bs, workers=tcfg["num_workers_loader"], seed=seed,
                           steps_per_epoch=tcfg["steps_per_epoch"])

    monitor = tcfg["monitor"]
    mode = MONITORABLE[monitor]
    ema = WarmEMA(generator, tcfg["ema_decay"]) if tcfg["ema_decay"] > 0 and step.trainable else None
    if tcfg["init_from"] and not (ckpt_dir / "last.pt").exists():
        _init_from(tcfg["init_from"], generator, step, ema, ctx.device)
    schedule = None
    if step.opt_g is not None:  # one schedule per optimizer: a GAN's discriminator follows the same course
        schedule = build_schedules(step.optimizers, config["scheduler"], epochs=tcfg["epochs"],
                                   steps_per_epoch=len(train_loader), mode=mode)

    # Cost of one forward pass on one validation-sized LR image (for quality-vs-cost objectives). Latency
    # takes several timed passes (seconds for a diffusion model), so only when a search asks for it.
    lr_shape = (1, *val_set[0]["lr"].shape)
    generator.to(ctx.device)
    cost = {"params": count_params(generator), "flops": estimate_flops(generator, lr_shape)}
    if run.measure_latency:
        cost["latency_ms"] = _latency(generator, model_name, model_params, lr_shape, run.latency_cache)

    start_epoch, best = 1, None
    steps, train_seconds = 0, 0.0   # optimizer steps and training seconds so far (what a budget counts)
    started = time.perf_counter()
    state = load_checkpoint(ckpt_dir / "last.pt", map_location=ctx.device)
    if state is not None:
        generator.load_state_dict(state["model"])
        step.load_state_dict(state["step"])
        if schedule is not None:
            schedule.load_state_dict(state.get("scheduler") or {})
        if ema is not None:
            ema.load_state_dict(state.get("ema") or {}, fallback=generator)
        start_epoch, best = state["epoch"] + 1, state.get("best")
        steps, train_seconds = int(state.get("steps", 0)), float(state.get("train_seconds", 0.0))
        restore_rng_state(state.get("rng"), rank=ctx.rank)  # continue the random sequence, not replay epoch 1
        started -= float(state.get("run_seconds", 0.0))
        # Say again where we are: the report of the checkpointed epoch may have been lost in the interruption
        # (trackers skip epochs they already logged).
        ctx.report({**state["metrics"], "checkpoint_dir": stored_dir(run, ckpt_dir)})
        if state["metrics"].get("time_limit_reached"):  # it had ended at its time limit: nothing more to do
            return state["metrics"]

    last: dict[str, Any] = {}
    grid, grids = None, GridSchedule(run.grid_epochs)  # the best epoch's sample grid, drawn when due
    for epoch in range(start_epoch, tcfg["epochs"] + 1):
        t0 = time.perf_counter()
        sums: dict[str, float] = {}  # image-weighted sums of the step's outputs (train_loss, train_d_loss, ...)
        seen = 0
        # (a dict, not MetricSums: which outputs a step reports is only known once it has run)
        if step.trainable:
            step.g.train()
            if isinstance(train_loader.sampler, (DistributedSampler, DrawSampler)):
                train_loader.sampler.set_epoch(epoch)
            for i, batch in enumerate(train_loader):
                lr_raw = batch["lr"].to(ctx.device, non_blocking=True)
                hr_raw = batch["hr"].to(ctx.device, non_blocking=True)
                out = step.train_batch(norm.apply(lr_raw, lr_raw), norm.apply(hr_raw, lr_raw), epoch, i)
                if schedule is not None:
                    schedule.step_batch()
                if ema is not None:
                    ema.update(generator)
                steps += 1
                for key, value in out.items():
                    sums[key] = sums.get(key, 0.0) + value * len(lr_raw)
                seen += len(lr_raw)
        train_time = time.perf_counter() - t0
        train_seconds += train_time
        keys = sorted(sums)  # the same on every rank: all ranks run the same step logic
        reduced = ctx.all_reduce_sum(torch.tensor([sums[k] for k in keys] + [seen], dtype=torch.float64,
                                                  device=ctx.device)).cpu().tolist()
        total_seen = reduced[-1]
        train_means = {k: v / total_seen for k, v in zip(keys, reduced)} if total_seen else {}
        evaluator = ema.module if ema is not None else generator
        val = evaluate(evaluator, step, norm, run.data_path, ctx, max_images=tcfg["val_max_images"],
                       batch_size=max(bs, 16), with_clean=with_clean, amp=amp, scorer=scorer)
        metrics = {
            "epoch": epoch,
            "steps": steps,
            "train_seconds": train_seconds,
            "train_loss": float("nan"),
            **train_means,
            "lr": step.opt_g.param_groups[0]["lr"] if step.opt_g else 0.0,
            "images_per_s": total_seen / train_time if train_time > 0 and total_seen else 0.0,
            **val,
            **gap_metrics(val, run.reference),
            **cost,
        }
        run_seconds = time.perf_counter() - started
        if tcfg["time_limit_s"] and epoch < tcfg["epochs"]:
            # every rank must stop at the same epoch (a rank that went on would wait forever in its next
            # all-reduce): stop when any rank's clock is past the limit
            past = torch.tensor([float(run_seconds >= tcfg["time_limit_s"])], device=ctx.device)
            if ctx.all_reduce_sum(past).item() > 0:
                metrics["time_limit_reached"] = 1  # the last report of this run: trackers say why it ended
        value = _monitored(metrics, monitor)
        if schedule is not None:
            schedule.step_epoch(value)
        improved = math.isfinite(value) and (best is None or (value > best if mode == "max" else value < best))
        if improved:
            best = value
        if ctx.is_main:
            payload = {
                "epoch": epoch, "best": best, "model": generator.state_dict(),  # DDP shares these parameters
                "ema": ema.state_dict() if ema is not None else None,
                "eval_model": evaluator.state_dict(), "step": step.state_dict(),
                "scheduler": schedule.state_dict() if schedule else None,
                "model_name": model_name, "model_params": model_params, "kind": spec.kind,
                "scale": run.scale, "in_channels": run.in_channels,
                "normalization": norm.state(), "config": config, "metrics": metrics,
                "data_path": run.data_name,  # the file as the user named it (a URI too)
                "steps": steps, "train_seconds": train_seconds, "run_seconds": run_seconds,
                "rng": capture_rng_state(),
            }
            save_checkpoint(payload, ckpt_dir / "last.pt", best_path=ckpt_dir / "best.pt" if improved else None)
            if improved:
                grid = _sample_panels(evaluator, norm, val_set, ctx.device, run.scale)
            drawn = grid is not None and grids.due(epoch, tcfg["epochs"], bool(metrics.get("time_limit_reached")))
            if drawn:
                render_grid(*grid, run_dir / SAMPLE_GRID)
                grid = None
            # to the run's stored folder, before the report
            publish_checkpoint(run, improved, SAMPLE_GRID if drawn else None)
        metrics["epoch_time_s"] = time.perf_counter() - t0
        metrics["checkpoint_dir"] = stored_dir(run, ckpt_dir)  # where the driver finds it (a URI too)
        _fault_point(run, epoch, ctx)
        ctx.barrier()
        ctx.report(metrics)
        last = metrics
        if metrics.get("time_limit_reached"):
            break
    return last


def _init_from(path: str, generator, step, ema, device) -> None:
    """Start from ``path``'s weights, weight average and optimizer state (Adam's moments), keeping this run's
    learning rates: the schedule built next starts from them (a warm restart), not from the old run's."""
    state = load_checkpoint(checkpoint_location(path), map_location=device)
    if state is None:
        raise ValueError(f"train.init_from: {path} does not exist")
    generator.load_state_dict(state["model"])
    lrs = [[g["lr"] for g in opt.param_groups] for opt in step.optimizers if opt is not None]
    step.load_state_dict(state["step"])
    for opt, group_lrs in zip([o for o in step.optimizers if o is not None], lrs):
        for group, lr in zip(opt.param_groups, group_lrs):
            group["lr"] = lr
            group.pop("initial_lr", None)  # else a new scheduler would take the old run's base rate
    if ema is not None:
        ema.load_state_dict(state.get("ema") or {}, fallback=generator)


def gap_metrics(val: dict[str, float], reference: dict[str, float] | None) -> dict[str, float]:
    """``val_psnr_gain`` (dB over bicubic on the same images) and ``val_gap_closed`` (share of the bicubic ->
    noise-ceiling PSNR gap: 0 = bicubic, 1 = as good as the noise-free truth) when a reference is known."""
    if not reference or "val_psnr" not in val or "bicubic_val_psnr" not in reference:
        return {}
    gain = val["val_psnr"] - reference["bicubic_val_psnr"]
    out = {"val_psnr_gain": gain}
    ceiling = reference.get("noise_ceiling_val_psnr")
    if ceiling is not None and ceiling > reference["bicubic_val_psnr"]:
        out["val_gap_closed"] = gain / (ceiling - reference["bicubic_val_psnr"])
    return out


def _latency(model, name: str, params: dict[str, Any], lr_shape: tuple[int, ...], cache_file: str | None) -> float:
    """Forward latency (ms) of this architecture, measured once per distinct architecture of a search.

    Trials run side by side, so a latency timed inside each trial measures its neighbours as much as itself
    (and a multi-objective search would optimise that noise). Here the fastest of 20 single-thread passes is
    taken (the least disturbed estimate) and cached in ``cache_file`` (``RunInfo.latency_cache``, a JSON file of
    the search): every later trial of the same architecture reuses the number instead of timing again.
    """
    import json

    key = json.dumps([name, params, list(lr_shape)], sort_keys=True, default=str)
    path = Path(cache_file) if cache_file else None
    cache = json.loads(path.read_text()) if path is not None and path.exists() else {}
    if key in cache:
        return float(cache[key])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        value = measure_latency(model, lr_shape, repeats=20, reduce="min")
    finally:
        torch.set_num_threads(threads)
    if path is not None:
        fresh = json.loads(path.read_text()) if path.exists() else {}
        fresh[key] = value
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(fresh))
        os.replace(tmp, path)
    return value


def _fits_in_memory(path: str, limit_bytes: int = 1 << 30) -> bool:
    """Whether the training split is small enough to read into RAM once (random patches then cost no I/O)."""
    from lensearch.data.store import open_h5

    info = open_h5(path)
    pixels = (info.hr_shape[0] * info.hr_shape[1]) + (info.lr_shape[0] * info.lr_shape[1])
    return info.splits.get("train", info.n) * pixels * 4 < limit_bytes


@torch.no_grad()
def evaluate(model, step, norm, data_path: str, ctx: RunContext, *, max_images: int, batch_size: int,
             with_clean: bool, amp: Amp, scorer=None) -> dict[str, float]:
    """Validation metrics of the first ``max_images`` val images (0 = all), each rank scoring its strided share
    (:func:`lensearch.evaluation.stream_split`), then all-reduced over ranks, as ``val_*`` means (``val_loss``:
    the step's validation loss); with a :class:`~lensearch.training.frozen_classifier.DownstreamScorer` also
    ``val_downstream_auc``."""
    from lensearch.evaluation import stream_split

    model.eval()
    if scorer is not None:
        scorer.reset()
    # Validation once went through a DataLoader, which draws a base seed from the global RNG on every pass: draw
    # it still, so a seeded run keeps training on the same random patches and draws as before.
    torch.empty((), dtype=torch.int64).random_()
    normalized: dict[str, torch.Tensor] = {}  # the batch's normalized LR and SR, for its loss

    def predict(lr_raw: torch.Tensor) -> torch.Tensor:
        lr_n = norm.apply(lr_raw, lr_raw)
        with amp.autocast():
            sr_n = model(lr_n).float()
        normalized.update(lr=lr_n, sr=sr_n)
        return norm.invert(sr_n, lr_raw)

    def loss(batch: dict[str, torch.Tensor], sr: torch.Tensor) -> dict[str, torch.Tensor]:
        if scorer is not None:
            scorer.add(sr, batch["index"])
        hr_n = norm.apply(batch["hr"], batch["lr"])
        value = step.val_loss(normalized["lr"], hr_n, normalized["sr"], model=model)
        return {"loss": value.detach().float().expand(len(sr))}

    sums = stream_split(data_path, "val", predict, batch_size=batch_size, max_images=max_images or None,
                        device=ctx.device, clean=with_clean, rank=ctx.rank, world_size=ctx.world_size,
                        extra_names=["loss"], extra=loss)
    sums.load_tensor(ctx.all_reduce_sum(sums.as_tensor(ctx.device)))
    out = sums.means(prefix="val_")
    if scorer is not None:
        out["val_downstream_auc"] = scorer.value(ctx)
    return out


GRID_INTERVAL_S = 30.0  # with known stopping epochs, the longest a drawn grid may lag the best epoch


class GridSchedule:
    """When the sample grid (``samples.png``: LR | bicubic | SR | HR | residual, for MLflow) of the best epoch
    so far is drawn.

    Drawing it takes matplotlib ~0.4 s on a CPU, as long as a short report's training, so it is drawn only
    where the run may end: ``stop_epochs`` are the epochs after which the search's scheduler may stop the
    trial (ASHA's rungs; ``run.grid_epochs``, set by the search driver), the last epoch, an epoch that hit
    the time limit, and at least every :data:`GRID_INTERVAL_S` seconds (a search's time budget cuts trials at
    any time). The panels are computed at the improving epoch itself, so a drawn grid always shows the best
    epoch's model. ``stop_epochs=None`` (a run outside a search, a scheduler that may stop at any epoch):
    drawn at every improving epoch.
    """

    def __init__(self, stop_epochs: list[int] | None):
        self.stop_epochs = None if stop_epochs is None else {int(e) for e in stop_epochs}
        self.last = time.perf_counter()

    def due(self, epoch: int, epochs: int, ends: bool) -> bool:
        now = time.perf_counter()
        if (self.stop_epochs is None or epoch in self.stop_epochs or epoch >= epochs or ends
                or now - self.last >= GRID_INTERVAL_S):
            self.last = now
            return True
        return False


@torch.no_grad()
def _sample_panels(model, norm, dataset, device, scale: int, count: int = 4) -> tuple[torch.Tensor, ...] | None:
    """LR, bicubic, SR and HR (CPU tensors) of the first few validation images, for :func:`render_grid`."""
    n = min(count, len(dataset))
    if n == 0:
        return None
    items = [dataset[i] for i in range(n)]
    lr = torch.stack([it["lr"] for it in items]).to(device)
    hr = torch.stack([it["hr"] for it in items])
    model.eval()
    sr = norm.invert(model(norm.apply(lr, lr)).float(), lr).cpu()
    bic = torch.nn.functional.interpolate(lr.cpu(), scale_factor=scale, mode="bicubic", align_corners=False)
    return lr.cpu(), bic, sr, hr


def render_grid(lr, bicubic, sr, hr, path: Path) -> None:
    """Write the grid PNG to ``path`` atomically."""
    from lensearch.training.sample_grid import render_grid as render

    tmp = path.with_suffix(".tmp.png")
    render(lr, bicubic, sr, hr, tmp)
    os.replace(tmp, path)
