"""Read searches back from the MLflow store and their search directories, for the report.

A search is found as ``lensearch export`` finds it (:func:`lensearch.export.find_search`: a search directory,
a search name under ``<store>/searches`` or the parent run id). From MLflow it reads the parent run (its
parameters, the summary :func:`lensearch.search.tracking.MLflowTracker.finish_search` logged: ``best_*``,
trial counts, and the reference ``bicubic_val_*`` / ``noise_ceiling_val_*``) and every child run: the sampled
parameters (typed back from MLflow's strings), the ``state`` tag, per-epoch histories of the metrics the report
plots, the cost metrics and the best checkpoint.

A trial's **best epoch** is chosen by the search's rule (:mod:`lensearch.search.results`): the epoch with the best primary objective (the first one
on ties); the trial's ``best`` values are every metric's value at that epoch, so they equal the leaderboard's.
"""

from __future__ import annotations

import ast
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lensearch.errors import UserError

__all__ = ["HISTORY_METRICS", "SearchData", "TrialData", "collect", "parse_param"]

# metrics whose per-epoch history the report reads (objectives are added per search)
HISTORY_METRICS = ("val_psnr", "val_ssim", "val_mse", "val_gap_closed", "val_psnr_gain", "steps", "train_seconds",
                   "train_loss")
COST = ("params", "flops", "latency_ms")


@dataclass
class TrialData:
    """One trial as logged: parameters, end state, histories ``{metric: [(epoch, value), ...]}``, cost."""

    trial_id: str
    run_id: str
    state: str
    status: str
    params: dict[str, Any]
    history: dict[str, list[tuple[int, float]]]
    cost: dict[str, float]
    checkpoint: Path | None
    best: dict[str, float] = field(default_factory=dict)   # every metric at the best epoch (+ "epoch")
    start_time: int | None = None                           # MLflow run start (ms since the epoch)

    @property
    def model(self) -> str:
        return str(self.params.get("model", "?"))

    @property
    def epochs(self) -> int:
        return max((step for values in self.history.values() for step, _ in values), default=0)

    def last(self, metric: str) -> float | None:
        values = self.history.get(metric)
        return values[-1][1] if values else None


@dataclass
class SearchData:
    """One search: the parent run's parameters and summary, the reference scores and the trials."""

    name: str
    dir: Path
    objectives: list[tuple[str, str]]
    tracking_uri: str
    parent_run_id: str
    params: dict[str, str]
    summary: dict[str, Any]
    reference: dict[str, float]
    trials: list[TrialData]
    max_epochs: int | None
    uri: str | None = None   # where the search is stored when in object storage (``dir`` is then a local copy)

    @property
    def location(self) -> str:
        """The search as the user knows it: its URI in object storage, else its directory."""
        return self.uri or str(self.dir)

    @property
    def primary(self) -> tuple[str, str]:
        return self.objectives[0]

    @property
    def data_path(self) -> str | None:
        return self.params.get("data")

    def scored(self) -> list[TrialData]:
        """Trials with a value of the primary objective at their best epoch."""
        return [t for t in self.trials if self.primary[0] in t.best]

    def best_trial(self) -> TrialData | None:
        metric, mode = self.primary
        rows = self.scored()
        return (max if mode == "max" else min)(rows, key=lambda t: t.best[metric]) if rows else None


def parse_param(text: str) -> Any:
    """An MLflow parameter string back to the value the trial got: int, float, bool, None or the string."""
    if text in ("True", "False", "None"):
        return {"True": True, "False": False, "None": None}[text]
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return text
    return value if isinstance(value, (int, float, str, list, tuple, dict)) else text


def _best_epoch(history: dict[str, list[tuple[int, float]]], metric: str, mode: str) -> dict[str, float]:
    values = [(s, v) for s, v in history.get(metric, []) if math.isfinite(v)]
    if not values:
        return {}
    pick = values[0]
    for s, v in values[1:]:  # the first best on ties, as the search's results and Optuna are told
        if (v > pick[1]) if mode == "max" else (v < pick[1]):
            pick = (s, v)
    step = pick[0]
    out = {"epoch": float(step)}
    for key, series in history.items():
        at = [v for s, v in series if s == step]
        if at:
            out[key] = at[-1]
    return out


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def collect_one(search: str, store: str | Path = "mlruns", tracking_uri: str | None = None) -> SearchData:
    """Read one search (a directory, a name under ``store/searches``, or a parent run id)."""
    from mlflow.exceptions import MlflowException

    from lensearch.export import find_search
    from lensearch.search.layout import TRIALS, best_checkpoint
    from lensearch.search.refit import REFIT_OF

    ref = find_search(search, store, tracking_uri)
    if not ref.parent_run_id:
        raise UserError(f"{ref.uri or ref.dir}: no MLflow parent run recorded (mlflow_runs.json has none); was the "
                        f"search started?")
    client = _client(ref.tracking_uri)
    try:
        parent = client.get_run(ref.parent_run_id)
        children = client.search_runs([parent.info.experiment_id],
                                      f"tags.mlflow.parentRunId = '{ref.parent_run_id}'", max_results=5000)
    except MlflowException as err:
        raise UserError(f"search {ref.uri or ref.dir}: its MLflow parent run {ref.parent_run_id} is not in "
                        f"{ref.tracking_uri} ({err.message.splitlines()[0]}); pass --tracking-uri") from None
    summary: dict[str, Any] = dict(parent.data.metrics)
    summary.update({k[len("summary."):]: v for k, v in parent.data.tags.items() if k.startswith("summary.")})
    reference = {k: float(v) for k, v in parent.data.metrics.items()
                 if k.startswith(("bicubic_val_", "noise_ceiling_val_", "hr_val_"))}
    wanted = list(dict.fromkeys([*(m for m, _ in ref.objectives), *HISTORY_METRICS]))
    trials = []
    for run in children:
        tags = run.data.tags
        if tags.get("lensearch.kind", "trial") != "trial":  # `lensearch export` nests its registry run here too
            continue
        trial_id = tags.get("lensearch.trial_id", run.info.run_name or run.info.run_id)
        history = {}
        for key in wanted:
            if key in run.data.metrics:
                hist = client.get_metric_history(run.info.run_id, key)
                history[key] = sorted((int(m.step), float(m.value)) for m in hist)
        ckpt = tags.get("checkpoint")
        if ckpt and "://" in ckpt:  # stored in object storage: the local copy find_search made
            ckpt = None
        path = Path(ckpt) if ckpt else best_checkpoint(ref.dir / TRIALS / trial_id)
        trial = TrialData(trial_id, run.info.run_id, tags.get("state", run.info.status.lower()), run.info.status,
                          {k: parse_param(v) for k, v in run.data.params.items()}, history,
                          {k: float(run.data.metrics[k]) for k in COST if k in run.data.metrics},
                          path if path.is_file() else None, start_time=run.info.start_time)
        trial.best = _best_epoch(history, *ref.objectives[0])
        trials.append(trial)
    by_id = {t.trial_id: t for t in trials}
    for t in trials:  # a refit trial's only parameter names the trial it continued: report that one's choices
        source = t.params.get(REFIT_OF)
        if source in by_id:
            t.params = {**by_id[source].params, **t.params}
    trials.sort(key=lambda t: t.trial_id)
    return SearchData(ref.name, ref.dir, [tuple(o) for o in ref.objectives], ref.tracking_uri, ref.parent_run_id,
                      dict(parent.data.params), summary, reference, trials, ref.max_epochs, uri=ref.uri)


def collect(searches: list[str], store: str | Path = "mlruns", tracking_uri: str | None = None) -> list[SearchData]:
    """:func:`collect_one` for each search given (at least one)."""
    if not searches:
        raise UserError("report: expected at least one SEARCH")
    return [collect_one(s, store, tracking_uri) for s in searches]
