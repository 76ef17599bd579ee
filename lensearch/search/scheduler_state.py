"""The early-stopping scheduler's memory, kept in the search directory so that ``--resume`` keeps it.

Ray Tune restores a search's trials and its searcher on ``Tuner.restore``, but not its trial scheduler: the
scheduler comes back as it was built, with empty records. For ASHA that means empty rungs — no cutoff at any
milestone — so after an interrupt (Ctrl-C, SIGTERM, ``kill -9``) and ``--resume`` no remaining trial was stopped
(issue #14). Here a Tune callback, :class:`SchedulerStateKeeper`, writes what the
scheduler has recorded to ``<search_dir>/scheduler_state.json`` after every result it was told (atomically:
a temporary file renamed over the old one), and on the first step of a resumed run puts it back into the
scheduler that Tune restored, before any new result arrives. A resumed search then makes the stop decisions the
uninterrupted one would have made.

What is kept:

* **ASHA** (``AsyncHyperBandScheduler``): each bracket's rungs (milestone -> ``{trial_id: signed reward}``,
  the values the cutoff is a percentile of), which bracket each trial is in, and the count of stopped trials.
* **Median stopping** (``MedianStoppingRule``): every trial's reported ``(time, metric)`` pairs (the running
  means the median is taken over) and the trials it stopped.

Synchronous HyperBand keeps ``Trial`` objects in brackets that Tune rebuilds on restore; it is not covered
(:func:`supported` is False and ``--resume`` says so). FIFO (``none``) has nothing to keep.

The callback holds the scheduler object itself. Tune pickles the tune and run configurations of a search in one
piece (``tuner.pkl``), so after ``Tuner.restore`` the callback's reference is the scheduler Tune runs with.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import Any

from ray.tune import Callback

__all__ = ["STATE_FILE", "SchedulerStateKeeper", "capture", "keepers", "load", "restore", "save", "supported"]

STATE_FILE = "scheduler_state.json"
FORMAT = 1


def _kind(scheduler: Any) -> str | None:
    from ray.tune.schedulers import AsyncHyperBandScheduler, HyperBandScheduler, MedianStoppingRule

    if isinstance(scheduler, HyperBandScheduler):  # (not a subclass of the async one, but be explicit)
        return None
    if isinstance(scheduler, AsyncHyperBandScheduler):
        return "asha"
    if isinstance(scheduler, MedianStoppingRule):
        return "median"
    return None


def supported(scheduler: Any) -> bool:
    """Whether :func:`capture` / :func:`restore` know this scheduler's state."""
    return _kind(scheduler) is not None


def _num(value: Any) -> float | None:
    """A reward as JSON can hold it (NaN/inf as None; ASHA's cutoff ignores NaN, and None reads back as NaN)."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def capture(scheduler: Any) -> dict[str, Any]:
    """The scheduler's records as a JSON-able dict (see the module docstring for what is kept)."""
    kind = _kind(scheduler)
    if kind is None:
        raise ValueError(f"no saved state for {type(scheduler).__name__}")
    head = {"format": FORMAT, "kind": kind, "scheduler": type(scheduler).__name__,
            "metric": scheduler._metric, "mode": scheduler._mode, "time_attr": scheduler._time_attr}
    if kind == "asha":
        index = {id(b): i for i, b in enumerate(scheduler._brackets)}
        return {**head,
                "brackets": [[[milestone, {tid: _num(v) for tid, v in recorded.items()}]
                              for milestone, recorded in b._rungs] for b in scheduler._brackets],
                "trial_bracket": {tid: index[id(b)] for tid, b in scheduler._trial_info.items() if id(b) in index},
                "num_stopped": int(scheduler._num_stopped)}
    metric, time_attr = scheduler._metric, scheduler._time_attr
    return {**head,
            "results": {_tid(t): [[r.get(time_attr), _num(r.get(metric))] for r in results]
                        for t, results in scheduler._results.items()},
            "stopped": sorted(_tid(t) for t in scheduler._stopped_trials)}


def _tid(trial: Any) -> str:
    return str(getattr(trial, "trial_id", trial))


class _Known:
    """Stands in for a trial the restored Tune run does not know (it began after Tune's last experiment
    checkpoint, say): its results still count in the median rule's comparisons."""

    def __init__(self, trial_id: str):
        self.trial_id = trial_id

    def __repr__(self) -> str:
        return f"<trial {self.trial_id}>"


def restore(scheduler: Any, state: dict[str, Any], trials: list[Any] = ()) -> int:
    """Put ``state`` (from :func:`capture`) back into a freshly built scheduler of the same configuration.

    ``trials``: the Tune trials of the restored run (the median rule keys its records by trial object).
    Returns how many trials the restored records hold. Raises ``ValueError`` when ``state`` is of another
    scheduler, metric or rung layout (a search file edited between runs), leaving the scheduler untouched.
    """
    kind = _kind(scheduler)
    want = {"format": FORMAT, "kind": kind, "metric": scheduler._metric, "mode": scheduler._mode,
            "time_attr": scheduler._time_attr}
    for key, value in want.items():
        if state.get(key) != value:
            raise ValueError(f"saved scheduler state has {key}={state.get(key)!r}, this scheduler {value!r}")
    if kind == "asha":
        saved = state["brackets"]
        layout = [[m for m, _ in b._rungs] for b in scheduler._brackets]
        if [[m for m, _ in b] for b in saved] != layout:
            raise ValueError(f"saved ASHA rungs {[[m for m, _ in b] for b in saved]} differ from this "
                             f"scheduler's {layout}")
        ids = set()
        for bracket, rungs in zip(scheduler._brackets, saved):
            for (_, recorded), (_, values) in zip(bracket._rungs, rungs):
                recorded.clear()
                recorded.update({tid: (float("nan") if v is None else float(v)) for tid, v in values.items()})
                ids |= set(values)
        for tid, i in state["trial_bracket"].items():
            if tid in scheduler._trial_info:  # Tune re-added it on restore (to a bracket drawn at random)
                scheduler._trial_info[tid] = scheduler._brackets[i]
        scheduler._num_stopped = int(state["num_stopped"])
        return len(ids)
    by_id = {t.trial_id: t for t in trials}
    metric, time_attr = scheduler._metric, scheduler._time_attr
    scheduler._results.clear()
    for tid, rows in state["results"].items():
        key = by_id.get(tid) or _Known(tid)
        by_id[tid] = key
        scheduler._results[key] = [{time_attr: t, metric: float("nan") if v is None else v} for t, v in rows]
    scheduler._stopped_trials = {by_id.get(tid) or _Known(tid) for tid in state["stopped"]}
    return len(state["results"])


def save(state: dict[str, Any], path: Path) -> None:
    """Write ``state`` to ``path`` atomically (a crash leaves the previous file, never half of one)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.partial")
    with open(tmp, "w") as f:
        json.dump(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load(path: Path) -> dict[str, Any] | None:
    """The state saved at ``path``, or None when there is none."""
    path = Path(path)
    return json.loads(path.read_text()) if path.is_file() else None


class SchedulerStateKeeper(Callback):
    """Saves ``scheduler``'s records to ``path`` after each result and trial end; on the first step of a run
    that finds the file (a resumed search), restores them first and says so on stderr (unless ``quiet``).

    ``uri``: with a search in object storage, the file's place in the store. Each save is uploaded there too (the
    driver's working copy is only a cache, and the rest of the search directory is mirrored only when a trial
    ends), and a resumed run whose working copy lacks the file reads it from there."""

    def __init__(self, scheduler: Any, path: Path, quiet: bool = False, uri: str | None = None):
        self.scheduler, self.path, self.quiet, self.uri = scheduler, Path(path), quiet, uri
        self._started = False
        self._written: str | None = None

    def relocate(self, search_dir: Path, uri: str | None = None) -> None:
        """Keep the file in ``search_dir`` (and at ``uri``): on ``--resume`` Tune unpickles this callback with the
        directory the search started in, which is not this run's on another machine or after a move."""
        self.path = Path(search_dir) / STATE_FILE
        self.uri = uri if uri is not None else self.uri

    def __getstate__(self):  # pickled into tuner.pkl at the start: a resumed run starts unrestored
        return {**self.__dict__, "_started": False, "_written": None}

    def _note(self, text: str) -> None:
        if not self.quiet:
            print(text, file=sys.stderr, flush=True)

    def on_step_begin(self, iteration: int, trials: list, **info) -> None:
        if self._started:
            return
        self._started = True
        if not self.path.is_file() and self.uri:
            try:
                from lensearch import storage

                storage.download(self.uri, self.path)
            except Exception as err:  # the store is unreachable: say so, go on with empty records
                self._note(f"lensearch: --resume: could not read {self.uri} ({err}); early stopping starts with "
                           f"empty records")
        state = load(self.path)
        if state is None:
            return
        try:
            n = restore(self.scheduler, state, trials)
        except (ValueError, KeyError, TypeError) as err:
            self._note(f"lensearch: --resume: {self.path.name} not restored ({err}); early stopping starts "
                       f"with empty records")
            return
        self._written = json.dumps(state, sort_keys=True)
        self._note(f"lensearch: restored the {state['scheduler']} records of {n} trial(s) from {self.path.name}")

    def _save(self) -> None:
        state = capture(self.scheduler)
        text = json.dumps(state, sort_keys=True)
        if text != self._written:
            save(state, self.path)
            self._written = text
            if self.uri:
                self._upload(text)

    def _upload(self, text: str) -> None:
        from lensearch import storage

        try:
            storage.write_bytes(self.uri, text.encode())
        except Exception as err:  # a failed upload must not stop the search: the next save (or the mirror) retries
            self._note(f"lensearch: could not upload {self.path.name} to {self.uri}: {err}")
            self._written = None

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info) -> None:
        self._save()  # Tune calls the scheduler first, then its callbacks: this result is in the records

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info) -> None:
        self._save()

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info) -> None:
        self._save()


def keepers(scheduler: Any, search_dir: Path, quiet: bool = False, uri: str | None = None) -> list[Callback]:
    """The callbacks a new search adds to keep ``scheduler``'s state in ``search_dir`` (and, for a search in
    object storage, at ``uri``/``scheduler_state.json``); none for FIFO, no scheduler, or one whose state is not
    covered."""
    if scheduler is None or not supported(scheduler):
        return []
    from lensearch.storage import join

    return [SchedulerStateKeeper(scheduler, Path(search_dir) / STATE_FILE, quiet=quiet,
                                 uri=join(uri, STATE_FILE) if uri else None)]
