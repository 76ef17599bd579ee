"""Choosing the trial to export: the finished trials of a search, ranked by the metrics in their ``best.pt``.

A trial is *finished* when it wrote ``checkpoints/best.pt``; trials are ranked by the metrics stored in that
checkpoint (the epoch whose weights are exported), by default the search's first objective. Multi-objective
searches report their Pareto front; ``--trial`` picks any trial. Ranking and the Pareto front are the search's
own (:mod:`lensearch.search.results`, imported lazily).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lensearch.errors import UserError, expect
from lensearch.export.locate import SearchRef

__all__ = ["SelectedTrial", "choose_trial", "read_checkpoint"]


@dataclass
class SelectedTrial:
    """The trial to export and why it was chosen (``Choice`` is the search space's conditional branch, not this)."""

    trial_id: str
    checkpoint: Path
    metrics: dict[str, float]
    run_id: str | None
    reason: str


def read_checkpoint(path: Path) -> dict[str, Any]:
    try:  # mmap: the tensors stay on disk until used, so ranking many trials stays cheap
        return torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except Exception as err:
        raise UserError(f"{path}: unreadable checkpoint ({type(err).__name__}: {err})") from None


def _trial_rows(ref: SearchRef) -> list:
    from lensearch.search.layout import TRIALS, best_checkpoint
    from lensearch.search.results import TrialRow
    from lensearch.search.tracking import end_state

    rows = []
    for path in sorted((ref.dir / TRIALS).glob(str(best_checkpoint("*")))):
        ckpt = read_checkpoint(path)
        metrics = {k: float(v) for k, v in ckpt.get("metrics", {}).items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool)}
        trial_id = path.parents[1].name
        # completed vs stopped early decides who may be on a Pareto front (fronts compare equal budgets)
        state = ("finished" if ref.max_epochs is None or trial_id not in ref.logged
                 else end_state({"epoch": int(ref.logged[trial_id])}, ref.max_epochs))
        rows.append(TrialRow(trial_id, state, int(ckpt.get("epoch", 0)), metrics, {}, str(path),
                             ref.run_ids.get(trial_id)))
    expect(rows, f"search {ref.dir}: no finished trial (no trials/*/checkpoints/best.pt); nothing to export")
    return rows


def _mode(metric: str, objectives: list[tuple[str, str]]) -> str:
    from lensearch.search.results import COST_METRICS
    from lensearch.training.config import MONITORABLE

    modes = {**MONITORABLE, **dict.fromkeys(COST_METRICS, "min"), **dict(objectives)}
    expect(metric in modes, f"--metric {metric}: no known direction; give --mode max or --mode min")
    return modes[metric]


def choose_trial(ref: SearchRef, metric: str | None = None, mode: str | None = None,
                 trial: str | None = None) -> SelectedTrial:
    """The trial ``trial``, else the best finished trial by ``metric`` (default: the first objective)."""
    from lensearch.search.results import best_row, pareto_rows

    rows = _trial_rows(ref)
    front = ""
    if len(ref.objectives) > 1:
        front = (f"; multi-objective search ({', '.join(f'{m} {d}' for m, d in ref.objectives)}), Pareto front: "
                 f"{', '.join(r.trial_id for r in pareto_rows(rows, ref.objectives)) or 'empty'}")
    if trial is not None:
        row = next((r for r in rows if r.trial_id == trial), None)
        expect(row, f"--trial {trial}: no finished trial with that id in {ref.dir}; finished: "
                    f"{', '.join(r.trial_id for r in rows)}")
        reason = f"trial {trial} chosen with --trial" + front
    else:
        metric = metric or ref.objectives[0][0]
        mode = mode or _mode(metric, ref.objectives)
        row = best_row(rows, metric, mode)
        expect(row, f"--metric {metric}: not reported by any finished trial; reported: "
                    f"{', '.join(sorted(rows[0].best))}")
        reason = f"best {metric} ({mode}) of {len(rows)} finished trial(s)"
        if front:
            reason += front + "; exported the best by the first objective (pick a front point with --trial)"
    return SelectedTrial(row.trial_id, Path(row.checkpoint), row.best, row.run_id, reason)
