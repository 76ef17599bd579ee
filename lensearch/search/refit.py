"""The refit: a time-budgeted search's last phase, which turns the best configurations into the best models.

A search explores with short, early-stopped trials; whatever it finds, its best trial has trained for only
part of the budget, on a schedule fitted to its own report count. A single good configuration given the
whole budget usually beats that. So a search with ``budget.refit_share: s`` and a time budget ``T`` explores
for ``(1 - s) T``, then spends ``s T`` on a refit: the top ``k`` trials by the first objective (``k`` = the
number of trials that run at once, so the machine stays as busy as during the search) each continue from
their best checkpoint, weights, weight average and optimizer state, with a fresh cosine schedule annealed to
zero over the refit time. The learning rate restarts at half the trial's configured rate, or at the rate the
trial had reached if that is higher (a trial cut mid-schedule continues where it was; one that finished its
schedule gets a warm restart). The number of reports is fitted to the time from the trial's own measured
seconds per report, and the trial's time limit is the refit time, so the refit ends on time either way.

Each refit is an ordinary trial of a second Tune run (``refit/`` in the search directory): it has its own
trial directory with ``best.pt``, its own MLflow child run (tagged ``refit of <trial>``), and a row in the
leaderboard, so the summary, ``export`` and the report pick the best model whichever phase produced it.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

from lensearch.errors import expect
from lensearch.search.layout import best_checkpoint

REFIT = "refit"            # the refit phase's Tune folder inside the search directory
REFIT_OF = "refit_of"      # the refit trial's only parameter: the trial it continues
START_S = 5.0              # what a refit trial spends before its first step (process, data, model)


def refit_seconds(budget: dict[str, Any]) -> float:
    """Seconds of the time budget kept for the refit (0: no refit)."""
    share, total = budget.get("refit_share") or 0.0, budget.get("time_budget_s") or 0.0
    return float(share) * float(total)


def pick(rows: list, objectives: list[tuple[str, str]], count: int) -> list:
    """The ``count`` best rows by the first objective that have a checkpoint (single-objective searches only:
    a front has no one best to refit)."""
    if len(objectives) != 1 or count < 1:
        return []
    metric, mode = objectives[0]
    ranked = [r for r in rows if r.checkpoint and metric in r.best and math.isfinite(r.best[metric])]
    ranked.sort(key=lambda r: r.best[metric], reverse=mode == "max")
    return ranked[:count]


def refit_config(ckpt: dict[str, Any], path: Path, seconds: float) -> dict[str, Any]:
    """The run configuration that continues checkpoint ``ckpt`` (read from ``path``) for ``seconds``."""
    config = copy.deepcopy(ckpt["config"])
    epoch = max(1, int(ckpt.get("epoch", 1)))
    per_report = float(ckpt.get("run_seconds") or 0.0) / epoch  # training + validation, as measured in the trial
    usable = max(1.0, seconds - START_S)
    reports = max(1, int(usable / per_report)) if per_report > 0 else 1
    optimizer = dict(config.get("optimizer") or {"name": "adam"})
    base = optimizer.get("lr")
    reached = float(ckpt.get("metrics", {}).get("lr") or 0.0)
    if base is not None:
        optimizer["lr"] = max(0.5 * float(base), reached)
    elif reached > 0:
        optimizer["lr"] = reached
    train = dict(config["train"])
    warmup = int(train.get("gan_warmup_epochs") or 0)
    train.update(epochs=reports, time_limit_s=usable, init_from=str(path),
                 gan_warmup_epochs=max(0, warmup - epoch))  # a GAN past its pixel warm-up stays adversarial
    config.update(optimizer=optimizer, scheduler={"name": "cosine"}, train=train)
    return config


def load_refit_config(trials_dir: Path | str, source: str, seconds: float) -> dict[str, Any]:
    """:func:`refit_config` for trial ``source`` of a search (its ``best.pt``); ``trials_dir`` may be a URI (a
    remote store: ``train.init_from`` is then the checkpoint's URI, fetched by whichever node trains)."""
    from lensearch.storage import is_uri, join, local_copy
    from lensearch.training.checkpoint import load_checkpoint

    if is_uri(str(trials_dir)):
        path = join(str(trials_dir), source, "checkpoints", "best.pt")
        ckpt = load_checkpoint(local_copy(path))
    else:
        path = best_checkpoint(Path(trials_dir) / source)
        ckpt = load_checkpoint(path)
    expect(ckpt is not None, f"refit: trial {source} has no checkpoint at {path}")
    return refit_config(ckpt, path, seconds)


def refit_state(last_result: dict[str, Any], source: str) -> str:
    """The end state of a refit trial, as logged and shown."""
    return f"refit of {source}, {int(last_result.get('epoch', 0))} reports"
