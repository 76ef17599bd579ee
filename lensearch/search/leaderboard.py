"""What a search shows: one line per trial event while it runs (:class:`ProgressPrinter`), the final
leaderboard and the one-line summary."""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Any

from ray.tune import Callback

from lensearch.search.results import DOWNSTREAM_METRIC, SearchOutcome, pareto_front, summary_metrics
from lensearch.search.tracking import death_cause, end_state, retry_message, trial_error_message, trial_error_text


class ProgressPrinter(Callback):
    """One line per trial event on stderr: start, each epoch's objective, end state."""

    def __init__(self, metric: str, max_epochs: int, max_retries: int = 0, trials: str | None = None):
        self.metric, self.max_epochs, self.max_retries = metric, max_epochs, max_retries
        self.trials = trials  # the search's trials folder (path or URI): where a retried trial's last.pt is
        self.t0 = time.time()

    def relocate(self, search_dir) -> None:
        """This run's trials folder (on ``--resume``, Tune's unpickled copy names the one the search started in)."""
        from lensearch.storage import is_uri

        if self.__dict__.get("trials") and not is_uri(str(self.trials)):
            self.trials = str(Path(search_dir) / Path(self.trials).name)

    def __setstate__(self, state):  # unpickled by Tuner.restore: count time from the restart
        self.__dict__.update(state, t0=time.time())

    def _say(self, text: str) -> None:
        print(f"[{time.time() - self.t0:7.1f}s] {text}", file=sys.stderr, flush=True)

    def on_trial_start(self, iteration, trials, trial, **info):
        keys = ", ".join(f"{k}={_short(v)}" for k, v in sorted(trial.config.items()))
        self._say(f"trial {trial.trial_id} started: {keys}")

    def on_trial_result(self, iteration, trials, trial, result, **info):
        value = result.get(self.metric)
        shown = f"{value:.4f}" if isinstance(value, (int, float)) else value
        self._say(f"trial {trial.trial_id} epoch {result.get('epoch')}/{self.max_epochs} "
                  f"{self.metric}={shown} ({result.get('epoch_time_s', 0):.1f}s)")

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._say(f"trial {trial.trial_id} {end_state(trial.last_result or {}, self.max_epochs)}")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._say(f"trial {trial.trial_id} errored: {trial_error_message(trial)}")

    def on_trial_recover(self, iteration, trials, trial, **info):
        if death_cause(trial_error_text(trial)) is None:
            return  # an error it raised: restarted only to re-raise it (trial_function), shown as errored
        why = retry_message(trial, getattr(self, "max_retries", 0), self.__dict__.get("trials"))
        self._say(f"trial {trial.trial_id} {why}")


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def leaderboard(outcome: SearchOutcome, top: int = 10) -> str:
    """The final table: top trials by the first objective, their key parameters and metrics."""
    metric, mode = outcome.objectives[0]
    ranked = sorted(outcome.finished, key=lambda r: r.best.get(metric, -math.inf if mode == "max" else math.inf),
                    reverse=mode == "max")
    front = {r.trial_id for r in pareto_front(outcome)} if len(outcome.objectives) > 1 else set()
    extra = ("val_psnr", "val_ssim", "val_gap_closed", DOWNSTREAM_METRIC, "steps", "params")
    cols = [m for m, _ in outcome.objectives] + [c for c in extra if c not in {m for m, _ in outcome.objectives}
                                                 and any(c in r.best for r in ranked)]
    heads = {"val_gap_closed": "gap closed", DOWNSTREAM_METRIC: "downstr. AUC"}
    lines = [f"{'rank':<5}{'trial':<13}{'state':<32}" + "".join(f"{heads.get(c, c):>13}" for c in cols)
             + "  key params"]
    for i, row in enumerate(ranked[:top], 1):
        vals = "".join(f"{_pct(row.best.get(c)) if c == 'val_gap_closed' else _fmt(row.best.get(c)):>13}"
                       for c in cols)
        params = ", ".join(f"{k}={_short(v)}" for k, v in sorted(row.params.items())
                           if k in ("model", "normalization", "optimizer") or k.endswith(".lr"))
        mark = "*" if row.trial_id in front else ""
        state = row.state if len(row.state) <= 31 else row.state[:30] + "…"
        lines.append(f"{i:<5}{row.trial_id + mark:<13}{state:<32}{vals}  {params}")
    for row in outcome.rows:
        if row not in ranked:
            lines.append(f"{'-':<5}{row.trial_id:<13}{row.state}")
    for row in ranked[:top]:  # a state cut to fit its column, whole (an error's type and message)
        if len(row.state) > 31:
            lines.append(f"{row.trial_id}: {row.state}")
    if front:
        lines.append("* on the Pareto front of " + ", ".join(f"{m} ({mode})" for m, mode in outcome.objectives))
    ref = outcome.reference
    if ref:
        text = (f"reference on the val split: bicubic val_psnr {ref['bicubic_val_psnr']:.4f}, "
                f"val_ssim {ref['bicubic_val_ssim']:.4f}")
        if "noise_ceiling_val_psnr" in ref:
            text += (f"; noise ceiling (hr_clean vs hr) val_psnr {ref['noise_ceiling_val_psnr']:.4f}, "
                     f"val_ssim {ref['noise_ceiling_val_ssim']:.4f}")
        if f"hr_{DOWNSTREAM_METRIC}" in ref:
            text += (f"; {DOWNSTREAM_METRIC} of the frozen classifier: HR {ref[f'hr_{DOWNSTREAM_METRIC}']:.4f}, "
                     f"bicubic {ref[f'bicubic_{DOWNSTREAM_METRIC}']:.4f}")
        lines.append(text)
    best = outcome.best()
    if best is not None:
        lines.append(f"best checkpoint: {best.checkpoint}")
    return "\n".join(lines)


def one_line_summary(outcome: SearchOutcome) -> str:
    s = summary_metrics(outcome)
    metric, _ = outcome.objectives[0]
    best = outcome.best()
    parts = [f"{s['completed']} completed", f"{s['stopped_early']} stopped early"]
    parts += [f"{s[k]} {label}" for k, label in (("cut_by_time_budget", "cut by the time budget"),
                                                   ("hit_time_limit", "at their time limit"),
                                                   ("refit", "refit")) if s[k]]
    head = (f"search '{outcome.name}': {s['trials']} trials ({', '.join(parts)}, {s['errored']} errored) "
            f"in {s['seconds']:.0f}s")
    if best is None:
        head += "; no trial finished an epoch"
    else:
        head += f"; best {metric} {best.best[metric]:.4f} (trial {best.trial_id}, MLflow run {best.run_id})"
    if outcome.interrupted:  # last on the line, so the command can be copied (or parsed) to the line's end
        head += "; INTERRUPTED" + (f" — continue with: {outcome.resume_command}" if outcome.resume_command else "")
    return head


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f} %"


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if float(value).is_integer() and abs(value) >= 1:
        return f"{int(value):,}"
    return f"{value:.4g}" if abs(value) < 1e-2 else f"{value:.4f}"
