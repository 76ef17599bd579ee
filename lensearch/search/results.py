"""A search's results: one :class:`TrialRow` per trial (its end state and the metrics of its best epoch), the
:class:`SearchOutcome` that holds them, the best trial, the Pareto front and the summary logged to MLflow.

The rules here are the ones every reader applies (the leaderboard, ``export``, the report): a trial's *best
epoch* is the epoch with the best primary objective (the first such epoch on ties), the best trial is the first
of those with the best value, and the Pareto front holds only trials that used their whole budget, with the
tie rule of :func:`pareto_rows`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from lensearch.search.layout import TRIALS, best_checkpoint
from lensearch.search.tracking import CUT_BY_TIME_BUDGET, FULL_BUDGET_STATES, end_state, error_summary

COST_METRICS = ("params", "flops", "latency_ms")
DOWNSTREAM_METRIC = "val_downstream_auc"  # lensearch.training.frozen_classifier.METRIC
# what a row keeps of its best epoch (besides the objectives)
ROW_METRICS = ("val_psnr", "val_ssim", "val_mse", "val_psnr_clean", "val_ssim_clean", "val_psnr_gain",
               "val_gap_closed", DOWNSTREAM_METRIC, *COST_METRICS, "epoch", "steps", "train_seconds")


@dataclass
class TrialRow:
    trial_id: str
    state: str
    epochs: int
    best: dict[str, float]
    params: dict[str, Any]
    checkpoint: str | None
    run_id: str | None


@dataclass
class SearchOutcome:
    name: str
    search_dir: Path
    objectives: list[tuple[str, str]]
    rows: list[TrialRow]
    parent_run_id: str | None
    tracking_uri: str
    seconds: float
    interrupted: bool = False
    search_file: Path | None = None
    reference: dict[str, float] = field(default_factory=dict)  # bicubic and noise ceiling on the val split
    resume_command: str | None = None  # the command that continues this search (searches, not `train`)
    search_uri: str | None = None      # where the search is stored when the store is a URI (search_dir: a copy)

    @property
    def finished(self) -> list[TrialRow]:
        return finished(self.rows)

    def best(self) -> TrialRow | None:
        return best_row(self.rows, *self.objectives[0])


class Scored(Protocol):
    """A trial as the rules below read it: a :class:`TrialRow`, or the report's ``TrialData`` (read from MLflow)."""

    state: str
    best: dict[str, float]

    @property
    def epochs(self) -> int: ...


R = TypeVar("R", bound=Scored)


def finished(rows: Iterable[R]) -> list[R]:
    """The rows of trials that reported at least one epoch."""
    return [r for r in rows if r.epochs > 0 and r.best]


def best_row(rows: Iterable[R], metric: str, mode: str) -> R | None:
    """The finished row with the best ``metric`` (``mode`` ``max`` or ``min``), the first of them on ties; None
    when none reported it."""
    rows = [r for r in finished(rows) if metric in r.best]
    if not rows:
        return None
    return (max if mode == "max" else min)(rows, key=lambda r: r.best[metric])


def pareto_rows(rows: Iterable[R], objectives: list[tuple[str, str]]) -> list[R]:
    """The rows not dominated on all ``objectives``, among the finished trials that used their full budget
    (completed, or stopped at their own time limit): a trial stopped early, cut, interrupted or errored was scored
    after less training and is not comparable, so it is never on the front (nor does it knock one off it).

    Tie rule: a row is dominated only by another that is at least as good on every objective and strictly better
    on at least one. Rows with equal values on every objective therefore all stay on the front (the other metrics
    of their best epochs are not compared). The front keeps the rows' order.
    """
    rows = [r for r in finished(rows)
            if r.state.startswith(FULL_BUDGET_STATES) and all(m in r.best for m, _ in objectives)]

    def dominates(a, b) -> bool:
        at_least = all((a.best[m] >= b.best[m]) if mode == "max" else (a.best[m] <= b.best[m])
                       for m, mode in objectives)
        return at_least and any(a.best[m] != b.best[m] for m, _ in objectives)

    return [r for r in rows if not any(dominates(o, r) for o in rows if o is not r)]


def pareto_front(outcome: SearchOutcome) -> list[TrialRow]:
    """:func:`pareto_rows` of a search's rows on its objectives (multi-objective searches)."""
    return pareto_rows(outcome.rows, outcome.objectives)


def outcome_from_results(search, grid, search_dir, tracker, tracking_uri, max_epochs, seconds, interrupted,
                         timed: bool = False) -> SearchOutcome:
    """The search's rows from Tune's results (``grid``) and what the MLflow ``tracker`` recorded; ``timed``: the
    search had a time budget (which Tune enforces by stopping running trials without telling any callback)."""
    rows = []
    objectives = [(o.metric, o.mode) for o in search.objectives]
    for result in grid:
        df = result.metrics_dataframe
        tid = (result.metrics or {}).get("trial_id") or Path(result.path).name
        best: dict[str, float] = {}
        epochs = 0
        if df is not None and len(df) and "epoch" in df:
            epochs = int(df["epoch"].max())
            metric, mode = objectives[0]
            if metric in df:
                idx = df[metric].idxmax() if mode == "max" else df[metric].idxmin()
                row = df.loc[idx]
                best = {k: float(row[k]) for k in ROW_METRICS if k in row and row[k] == row[k]}
                for m, _ in objectives:
                    best[m] = float(row[m])
        if result.error is not None:
            state = tracker.states.get(tid) or f"errored: {error_summary(result.error)}"
        elif interrupted and epochs < max_epochs and tid not in tracker.finished:
            state = f"interrupted at epoch {epochs}"
        elif tid in tracker.states:      # what the tracker tagged in MLflow, so both always agree
            state = tracker.states[tid]
        elif timed and epochs < max_epochs:
            state = CUT_BY_TIME_BUDGET.format(epoch=epochs)
        else:
            state = end_state(result.metrics or {"epoch": epochs}, max_epochs)
        ckpt = best_checkpoint(Path(search_dir) / TRIALS / tid)
        params = {k: v for k, v in (result.config or {}).items()}
        rows.append(TrialRow(tid, state, epochs, best, params, str(ckpt) if ckpt.exists() else None,
                             tracker.run_id(tid)))
    return SearchOutcome(search.name, Path(search_dir), objectives, rows, tracker.parent_run_id, tracking_uri,
                         seconds, interrupted=interrupted, search_file=search.path)


def summary_metrics(outcome: SearchOutcome) -> dict[str, Any]:
    """Counts of trials by end state, the reference and the best trial's metrics (the parent run's summary)."""
    best = outcome.best()
    states = [r.state.split(":")[0].split(" at ")[0].split(",")[0].split(" of ")[0] for r in outcome.rows]
    out: dict[str, Any] = {
        "trials": len(outcome.rows), "completed": states.count("completed"),
        "stopped_early": states.count("stopped early"), "errored": states.count("errored"),
        "interrupted": states.count("interrupted"),
        "cut_by_time_budget": states.count("cut by time budget"), "hit_time_limit": states.count("hit its time limit"),
        "refit": states.count("refit"),
        "seconds": round(outcome.seconds, 1),
    }
    out.update(outcome.reference)
    if best is not None:
        out.update({f"best_{k}": v for k, v in best.best.items()})
        out["best_trial"] = best.trial_id
        out["best_checkpoint"] = best.checkpoint
    return out

