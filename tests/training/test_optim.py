"""Optimizers and schedulers of lensearch.training.optim, built from their config sections and stepped, each
against values worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from lensearch.errors import UserError
from lensearch.training.optim import build_optimizer, build_scheduler

pytestmark = pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)`")


def _opt(lr=1.0, name="sgd", **extra):
    return build_optimizer([torch.nn.Parameter(torch.ones(1))], {"name": name, "lr": lr, **extra})


def _lr(opt) -> float:
    return opt.param_groups[0]["lr"]


def test_rmsprop_first_step_matches_the_update_rule():
    p = torch.nn.Parameter(torch.tensor([1.0]))
    opt = build_optimizer([p], {"name": "rmsprop", "lr": 0.01, "alpha": 0.9, "momentum": 0.5})
    assert isinstance(opt, torch.optim.RMSprop)
    assert opt.param_groups[0]["alpha"] == 0.9 and opt.param_groups[0]["momentum"] == 0.5
    (p ** 2).sum().backward()  # gradient 2
    opt.step()
    v = (1 - 0.9) * 2.0 ** 2                      # running mean of g^2 after one step
    step = 2.0 / (math.sqrt(v) + 1e-8)            # momentum buffer starts at the first step
    assert p.item() == pytest.approx(1.0 - 0.01 * step, rel=1e-6)


def test_multistep_decays_at_each_milestone():
    opt = _opt(lr=1.0)
    sched = build_scheduler(opt, {"name": "multistep", "milestones": [2, 3], "gamma": 0.1}, epochs=5,
                            steps_per_epoch=4, mode="max")
    assert sched.interval == "epoch"
    lrs = []
    for epoch in range(4):
        for _ in range(4):
            sched.step_batch()  # per-epoch schedule: batches do not move it
        sched.step_epoch(30.0)
        lrs.append(_lr(opt))
    assert lrs == pytest.approx([1.0, 0.1, 0.01, 0.01])


@pytest.mark.parametrize("mode, values, want", [
    ("max", [30.0, 31.0, 31.0, 30.5, 30.9], [1.0, 1.0, 0.5, 0.25, 0.125]),   # patience 0: every non-improvement
    ("min", [1.0, 0.5, 0.4, 0.6, 0.7], [1.0, 1.0, 1.0, 0.5, 0.25]),
])
def test_plateau_follows_the_monitored_metric_in_its_direction(mode, values, want):
    opt = _opt(lr=1.0)
    sched = build_scheduler(opt, {"name": "plateau", "factor": 0.5, "patience": 0}, epochs=5, steps_per_epoch=3,
                            mode=mode)
    assert sched.interval == "metric"
    got = []
    for value in values:
        sched.step_batch()
        sched.step_epoch(value)
        got.append(_lr(opt))
    assert got == pytest.approx(want)


def test_onecycle_warms_up_to_the_optimizer_lr_and_anneals_over_the_whole_run():
    opt = _opt(lr=0.1)
    epochs, steps = 2, 5
    sched = build_scheduler(opt, {"name": "onecycle", "pct_start": 0.3}, epochs=epochs, steps_per_epoch=steps,
                            mode="max")
    assert sched.interval == "step"
    lrs = [_lr(opt)]
    for _ in range(epochs * steps - 1):
        sched.step_batch()
        lrs.append(_lr(opt))
    sched.step_epoch(1.0)  # per-step schedule: the epoch end does not move it
    assert _lr(opt) == lrs[-1]
    # torch's OneCycleLR defaults: start at max/25, peak at step pct_start * total - 1, end at start / 1e4
    assert lrs[0] == pytest.approx(0.1 / 25)
    assert max(lrs) == pytest.approx(0.1) and lrs.index(max(lrs)) == round(0.3 * epochs * steps) - 1
    assert lrs[-1] == pytest.approx(0.1 / 25 / 1e4)
    peak = lrs.index(max(lrs))
    assert lrs[: peak + 1] == sorted(lrs[: peak + 1]) and lrs[peak:] == sorted(lrs[peak:], reverse=True)


@pytest.mark.parametrize("cfg, match", [
    ({"name": "plateau", "patience": "two"}, r"scheduler\.patience: expected a number, got 'two'"),
    ({"name": "multistep", "milestones": 5}, r"scheduler\.milestones: expected a list, got 5"),
    ({"name": "onecycle", "max_lr": 1.0}, r"scheduler\.max_lr: unknown parameter for onecycle; valid: pct_start"),
    ({"name": "exp"}, r"scheduler\.name: expected one of none, cosine"),
])
def test_scheduler_config_errors_name_the_key(cfg, match):
    with pytest.raises(UserError, match=match):
        build_scheduler(_opt(), cfg, epochs=2, steps_per_epoch=2, mode="max")


def test_rmsprop_config_errors_name_the_key():
    with pytest.raises(UserError, match=r"optimizer\.betas: unknown parameter for rmsprop; valid: lr, weight_decay, "
                                         r"momentum, alpha"):
        _opt(name="rmsprop", betas=[0.9, 0.99])
