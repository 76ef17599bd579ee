"""Optimizers and learning-rate schedulers, each found by name in a registry.

Configuration sections look like ``{"name": "adamw", "lr": 3e-4, "weight_decay": 1e-4}`` and
``{"name": "warmup_cosine", "warmup_epochs": 1}``. Each component's parameters are a typed model
(:class:`lensearch.typed.Params`): every parameter has a default and a checked type, and an unknown name or key
is a :class:`~lensearch.errors.UserError` naming ``optimizer.<key>`` / ``scheduler.<key>`` and the valid choices.

Schedulers step either per optimizer step (``"step"``) or per epoch (``"epoch"``); ``plateau`` steps per
epoch on the monitored metric. :func:`build_schedules` builds one schedule per optimizer of a training step
(a GAN's discriminator included) and steps them together.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from lensearch.errors import UserError
from lensearch.typed import Invalid, Params, checked, number, parse

Number = number(text="expected a number")
NonNegative = number(0, text="expected a number", range_text="expected >= 0")
Positive = number(0, exclusive=True, text="expected a number", range_text="expected > 0")
Share = number(0, 1, text="expected a number", range_text="expected in [0, 1]")
Beta = number(0, 1, high_exclusive=True, text="expected a number", range_text="expected in [0, 1)")
Epochs = number(1, integral=True, text="expected a number", range_text="expected a whole number >= 1")
Patience = number(0, integral=True, text="expected a number", range_text="expected a whole number >= 0")


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise Invalid("expected a boolean")
    return value


def _milestones(value: Any) -> list[int]:
    if not isinstance(value, (list, tuple)):
        raise Invalid("expected a list")
    if not all(isinstance(m, (int, float)) and not isinstance(m, bool) and float(m).is_integer() and m >= 1
               for m in value):
        raise Invalid("expected a list of whole numbers >= 1")
    return [int(m) for m in value]


@dataclass(frozen=True)
class Component:
    """A buildable component and its typed parameters (every parameter has a default)."""

    build: Callable[..., Any]
    params: type[Params]

    @property
    def defaults(self) -> dict[str, Any]:
        return self.params.defaults()


def validated(section: str, registry: dict[str, Component], cfg: dict[str, Any]) -> tuple[str, Component, dict]:
    """``cfg`` (``{"name": X, **params}``) checked against component ``X`` of ``registry``: its name, component
    and parameters with defaults filled. Errors name ``<section>.<key>``."""
    name = cfg.get("name")
    if name not in registry:
        raise UserError(f"{section}.name: expected one of {', '.join(registry)}, got {name!r}")
    comp = registry[name]
    params = parse(comp.params, {k: v for k, v in cfg.items() if k != "name"}, section, owner=name)
    return name, comp, params.to_dict()


# ------------------------------------------------------------------------------------------------ optimizers
class AdamParams(Params):
    lr: Positive = 2e-4
    weight_decay: NonNegative = 0.0
    beta1: Beta = 0.9
    beta2: Beta = 0.99
    eps: Positive = 1e-8


class AdamWParams(AdamParams):
    weight_decay: NonNegative = 1e-4


class SGDParams(Params):
    lr: Positive = 1e-2
    weight_decay: NonNegative = 0.0
    momentum: NonNegative = 0.9
    nesterov: checked(_boolean, bool) = False


class RMSpropParams(Params):
    lr: Positive = 1e-3
    weight_decay: NonNegative = 0.0
    momentum: NonNegative = 0.0
    alpha: Share = 0.99


OPTIMIZERS: dict[str, Component] = {
    "adam": Component(lambda p, lr, weight_decay, beta1, beta2, eps: torch.optim.Adam(
        p, lr=lr, weight_decay=weight_decay, betas=(beta1, beta2), eps=eps), AdamParams),
    "adamw": Component(lambda p, lr, weight_decay, beta1, beta2, eps: torch.optim.AdamW(
        p, lr=lr, weight_decay=weight_decay, betas=(beta1, beta2), eps=eps), AdamWParams),
    "sgd": Component(lambda p, lr, weight_decay, momentum, nesterov: torch.optim.SGD(
        p, lr=lr, weight_decay=weight_decay, momentum=momentum, nesterov=nesterov and momentum > 0), SGDParams),
    "rmsprop": Component(lambda p, lr, weight_decay, momentum, alpha: torch.optim.RMSprop(
        p, lr=lr, weight_decay=weight_decay, momentum=momentum, alpha=alpha), RMSpropParams),
}


def build_optimizer(params, cfg: dict[str, Any], lr_factor: float = 1.0) -> torch.optim.Optimizer:
    name, comp, kwargs = validated("optimizer", OPTIMIZERS, cfg)
    kwargs["lr"] *= lr_factor
    return comp.build(params, **kwargs)


@dataclass
class Schedule:
    """A built scheduler and when to step it (``"step"``, ``"epoch"``, or ``"metric"`` for plateau)."""

    scheduler: Any
    interval: str

    def step_batch(self) -> None:
        if self.scheduler is not None and self.interval == "step":
            self.scheduler.step()

    def step_epoch(self, metric: float | None = None) -> None:
        if self.scheduler is None:
            return
        if self.interval == "epoch":
            self.scheduler.step()
        elif self.interval == "metric":
            self.scheduler.step(metric)

    def state_dict(self) -> dict:
        return self.scheduler.state_dict() if self.scheduler is not None else {}

    def load_state_dict(self, state: dict) -> None:
        if self.scheduler is not None and state:
            self.scheduler.load_state_dict(state)


def _warmup_cosine(opt, total, steps_per_epoch, warmup_epochs, min_lr_ratio):
    warm = max(1, int(round(warmup_epochs * steps_per_epoch)))
    warm = min(warm, max(1, total - 1))
    sched = torch.optim.lr_scheduler
    return sched.SequentialLR(opt, [
        sched.LinearLR(opt, start_factor=0.01, end_factor=1.0, total_iters=warm),
        sched.CosineAnnealingLR(opt, T_max=max(1, total - warm), eta_min=opt.defaults["lr"] * min_lr_ratio),
    ], milestones=[warm])


# ------------------------------------------------------------------------------------------------ schedules
class NoParams(Params):
    pass


class CosineParams(Params):
    min_lr_ratio: Share = 0.01


class StepParams(Params):
    step_epochs: Epochs = 5
    gamma: Positive = 0.5


class MultiStepParams(Params):
    milestones: checked(_milestones, list[int]) = [5, 8]
    gamma: Positive = 0.5


class PlateauParams(Params):
    factor: number(0, 1, exclusive=True, high_exclusive=True, text="expected a number",
                   range_text="expected in (0, 1)") = 0.5
    patience: Patience = 2


class OneCycleParams(Params):
    pct_start: number(0, 1, exclusive=True, high_exclusive=True, text="expected a number",
                      range_text="expected in (0, 1)") = 0.3


class WarmupCosineParams(Params):
    warmup_epochs: NonNegative = 1.0
    min_lr_ratio: Share = 0.01


# Each builder: (optimizer, epochs, steps_per_epoch, mode, **params) -> (scheduler | None, interval)
SCHEDULERS: dict[str, Component] = {
    "none": Component(lambda o, e, s, mode: (None, "epoch"), NoParams),
    "cosine": Component(lambda o, e, s, mode, min_lr_ratio: (torch.optim.lr_scheduler.CosineAnnealingLR(
        o, T_max=max(1, e * s), eta_min=o.defaults["lr"] * min_lr_ratio), "step"), CosineParams),
    "step": Component(lambda o, e, s, mode, step_epochs, gamma: (torch.optim.lr_scheduler.StepLR(
        o, step_size=step_epochs, gamma=gamma), "epoch"), StepParams),
    "multistep": Component(lambda o, e, s, mode, milestones, gamma: (torch.optim.lr_scheduler.MultiStepLR(
        o, milestones=milestones, gamma=gamma), "epoch"), MultiStepParams),
    "plateau": Component(lambda o, e, s, mode, factor, patience: (torch.optim.lr_scheduler.ReduceLROnPlateau(
        o, mode=mode, factor=factor, patience=patience), "metric"), PlateauParams),
    "onecycle": Component(lambda o, e, s, mode, pct_start: (torch.optim.lr_scheduler.OneCycleLR(
        o, max_lr=o.defaults["lr"], total_steps=max(2, e * s), pct_start=pct_start), "step"), OneCycleParams),
    "warmup_cosine": Component(lambda o, e, s, mode, warmup_epochs, min_lr_ratio: (
        _warmup_cosine(o, max(2, e * s), s, warmup_epochs, min_lr_ratio), "step"), WarmupCosineParams),
}


def build_scheduler(optimizer, cfg: dict[str, Any], *, epochs: int, steps_per_epoch: int, mode: str) -> Schedule:
    """Build the scheduler named in ``cfg``; ``mode`` ("max"/"min") is the monitored metric's direction."""
    name, comp, kwargs = validated("scheduler", SCHEDULERS, cfg)
    scheduler, interval = comp.build(optimizer, epochs, max(1, steps_per_epoch), mode, **kwargs)
    return Schedule(scheduler, interval)


@dataclass
class ScheduleGroup:
    """One schedule per optimizer of a step (generator, and a GAN's discriminator), built from the same
    ``scheduler`` section and stepped together, so every optimizer follows the same time course
    (the discriminator's lr stays ``d_lr_factor`` times the generator's at every step, warm-up included).
    Same interface as :class:`Schedule`; its state is a list with one state per optimizer."""

    schedules: list[Schedule]

    @property
    def interval(self) -> str:
        return self.schedules[0].interval if self.schedules else "epoch"

    def step_batch(self) -> None:
        for s in self.schedules:
            s.step_batch()

    def step_epoch(self, metric: float | None = None) -> None:
        for s in self.schedules:
            s.step_epoch(metric)

    def state_dict(self) -> list[dict]:
        return [s.state_dict() for s in self.schedules]

    def load_state_dict(self, state: list[dict] | dict) -> None:
        if isinstance(state, dict):  # a checkpoint of a single Schedule (the generator's only)
            state = [state]
        for s, st in zip(self.schedules, state or []):
            s.load_state_dict(st)


def build_schedules(optimizers, cfg: dict[str, Any], *, epochs: int, steps_per_epoch: int,
                    mode: str) -> ScheduleGroup:
    """:func:`build_scheduler` for each optimizer in ``optimizers`` (e.g. ``step.optimizers``: G, then D)."""
    return ScheduleGroup([build_scheduler(o, cfg, epochs=epochs, steps_per_epoch=steps_per_epoch, mode=mode)
                          for o in optimizers if o is not None])
