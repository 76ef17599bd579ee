"""How a search chooses and stops trials: the seeded Optuna sampler, Ray Tune's ``OptunaSearch`` around it
(told the truth about early-stopped trials), and the early-stopping scheduler."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

from lensearch.search.schema import SearchFile

NSGA2_MIN_POPULATION = 4
NSGA2_MAX_POPULATION = 50  # Optuna's default


def nsga2_population(num_samples: int | None) -> int:
    """NSGA-II population for a budget of ``num_samples`` trials: about a quarter of the budget, at least
    :data:`NSGA2_MIN_POPULATION`, at most :data:`NSGA2_MAX_POPULATION` (Optuna's default).

    Why: NSGA-II samples generation 0 at random and only starts selecting and recombining once a whole
    generation has *completed*, so a population near the budget (Optuna's 50 with a 64-trial budget) never
    leaves generation 0 and the search is random search. A quarter of the budget gives about three evolved
    generations after the random one; 4 is the least that still gives non-dominated sorting and the
    two-parent crossover a choice of parents; 50 keeps large budgets at Optuna's default behaviour.
    """
    if not num_samples:
        return NSGA2_MAX_POPULATION
    return max(NSGA2_MIN_POPULATION, min(NSGA2_MAX_POPULATION, int(num_samples) // 4))


def make_sampler(searcher: dict[str, Any], multi: bool, num_samples: int | None = None):
    """The seeded Optuna sampler named by ``searcher`` (``num_samples``, the trial budget, sizes NSGA-II's
    population: :func:`nsga2_population`)."""
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

    seed, startup = searcher["seed"], searcher["startup_trials"]
    kinds = {
        "tpe": lambda: optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup, multivariate=True,
                                                  group=True, constant_liar=True),
        "random": lambda: optuna.samplers.RandomSampler(seed=seed),
        "cmaes": lambda: optuna.samplers.CmaEsSampler(seed=seed, n_startup_trials=startup,
                                                      warn_independent_sampling=False),
        "nsga2": lambda: optuna.samplers.NSGAIISampler(seed=seed, population_size=nsga2_population(num_samples)),
    }
    return kinds[searcher["name"]]()


def _better(value: float, than: float | None, mode: str) -> bool:
    return than is None or (value > than if mode == "max" else value < than)


def make_searcher(search: SearchFile, max_epochs: int, num_samples: int | None = None,
                  journal: Path | None = None):
    """OptunaSearch that tells Optuna the truth about early-stopped trials and the same value the
    leaderboard ranks by.

    Ray's OptunaSearch reports a trial stopped by the scheduler as COMPLETE with its last (partial) value,
    which makes an early-stopped trial look like a finished one and biases TPE toward configurations that
    look good early. Here every epoch's value is reported as an intermediate value (step = epoch; single
    objective), and a trial that ends before ``max_epochs`` without error is told as PRUNED: Optuna keeps
    its last intermediate value but ranks it below every completed trial.

    A completed trial is told its *best* epoch by the same rule as the leaderboard and the export: the epoch
    with the best primary objective (the first such epoch on ties), and every objective's value at that
    epoch — not the last epoch's values.

    ``num_samples`` (default: the search file's budget) sizes NSGA-II's population.

    With ``journal`` the study lives in that file (Optuna ``JournalStorage``, study name = the search's name):
    it survives ``--resume`` with the searcher, and ``optuna-dashboard`` or ``optuna.load_study`` can open it.
    """
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    objectives = [(o.metric, o.mode) for o in search.objectives]

    class PruneAwareOptunaSearch(OptunaSearch):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self._best_rows: dict[str, dict] = {}  # trial -> objectives at its best epoch (saved on resume)

        def _note_best(self, trial_id: str, result: dict) -> None:
            metric, mode = objectives[0]
            value = result.get(metric)
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                return
            best = self._best_rows.get(trial_id)
            if _better(float(value), None if best is None else best[metric], mode):
                self._best_rows[trial_id] = {m: result.get(m) for m, _ in objectives}

        def on_trial_result(self, trial_id: str, result: dict) -> None:
            if trial_id in self._completed_trials:
                return
            self._note_best(trial_id, result)
            if isinstance(self.metric, list):
                return  # Optuna has no intermediate values for multi-objective studies
            value, epoch = result.get(self.metric), result.get("epoch")
            if value is not None and epoch is not None and math.isfinite(value):
                self._ot_trials[trial_id].report(float(value), int(epoch))

        def relocate(self, journal: Path) -> None:
            """Keep the study in ``journal`` (this run's copy of the search's ``optuna.journal``): on ``--resume``
            Tune unpickles this searcher, and then restores its saved state, with the journal path of the machine
            the search started on (another cache for a search in object storage)."""
            self._relocated_journal = str(journal)
            self._point_at(self._relocated_journal)

        def _point_at(self, path: str) -> None:
            from optuna.storages import JournalStorage
            from optuna.storages.journal import JournalFileBackend

            study = self.__dict__.get("_ot_study")
            for store in (self.__dict__.get("_storage"), getattr(study, "_storage", None)):
                backend = getattr(store, "_backend", None)
                if (isinstance(store, JournalStorage) and isinstance(backend, JournalFileBackend)
                        and backend._file_path != path):
                    store._backend = JournalFileBackend(path)

        def restore(self, checkpoint_path: str) -> None:
            target = self.__dict__.get("_relocated_journal")  # the saved state would put the old path back
            super().restore(checkpoint_path)
            if target:
                self.relocate(target)

        def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
            # a trial that hit its own time limit (budget.trial_time_s) ran its whole budget: complete
            stopped_early = (not error and result is not None and not result.get("time_limit_reached")
                             and int(result.get("epoch", max_epochs)) < max_epochs)
            if stopped_early and trial_id not in self._completed_trials:
                self._ot_study.tell(self._ot_trials[trial_id], state=optuna.trial.TrialState.PRUNED)
                self._completed_trials.add(trial_id)
                return
            if not error and result is not None:
                self._note_best(trial_id, result)
                best = self._best_rows.get(trial_id)
                if best is not None:
                    result = {**result, **best}
            super().on_trial_complete(trial_id, result, error)

    metrics = [m for m, _ in objectives]
    modes = [m for _, m in objectives]
    multi = len(metrics) > 1
    storage = None
    if journal is not None:  # the study on disk (optuna-dashboard, importance), not only in Tune's pickle
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        storage = JournalStorage(JournalFileBackend(str(journal)))
    return PruneAwareOptunaSearch(
        space=search.space.suggest, storage=storage, study_name=search.name if storage is not None else None,
        metric=metrics if multi else metrics[0],
        mode=modes if multi else modes[0],
        sampler=make_sampler(search.searcher, multi,
                             num_samples if num_samples is not None else search.budget["num_samples"]),
        points_to_evaluate=[dict(p) for p in search.searcher["initial_points"]] or None,
    )


def stop_epochs(search: SearchFile, max_epochs: int) -> list[int] | None:
    """The epochs (before the last) after which :func:`make_scheduler`'s scheduler may stop a trial: ASHA's
    rungs, none without early stopping, ``None`` (any epoch) for the others. A trial draws its sample grid
    there (:class:`lensearch.training.loop.GridSchedule`), so a stopped trial's grid shows its best epoch."""
    cfg = search.early_stopping
    if search.multi_objective or cfg["name"] == "none":
        return []
    if cfg["name"] != "asha":
        return None
    import numpy as np

    grace, rf = min(cfg["grace_period"], max_epochs), cfg["reduction_factor"]
    rungs = int(np.log(max_epochs / grace) / np.log(rf) + 1)  # as Ray's ASHA bracket counts them (brackets=1)
    return sorted({math.ceil(grace * rf ** k) for k in range(rungs)} - {max_epochs})


def make_scheduler(search: SearchFile, max_epochs: int, *, notice=None):
    """The early-stopping scheduler of ``search`` (``time_attr = epoch``, on the primary objective).

    A multi-objective search gets **no early stopping** (FIFO, every trial runs ``max_epochs``): Ray's
    schedulers rank trials by one metric, so ASHA/HyperBand/median would cut trials on the primary
    objective alone (a small model good on ``params`` but slow to rise on ``val_psnr`` would be stopped),
    and a front must compare trials at one budget. A configured scheduler is then ignored with a one-line
    notice (``notice``: a callable taking the line; default: print to stderr).
    """
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, HyperBandScheduler, MedianStoppingRule

    cfg, obj = search.early_stopping, search.primary
    if search.multi_objective:
        if cfg["name"] != "none":
            line = (f"lensearch: multi-objective search: early_stopping '{cfg['name']}' ignored, no early stopping "
                    f"(every trial runs {max_epochs} epochs; Ray's schedulers stop on one metric only)")
            (notice or (lambda text: print(text, file=sys.stderr, flush=True)))(line)
        return FIFOScheduler()
    common = {"time_attr": "epoch", "metric": obj.metric, "mode": obj.mode}
    grace = min(cfg["grace_period"], max_epochs)
    builders = {
        "asha": lambda: ASHAScheduler(max_t=max_epochs, grace_period=grace,
                                      reduction_factor=cfg["reduction_factor"], **common),
        "hyperband": lambda: HyperBandScheduler(max_t=max_epochs, reduction_factor=cfg["reduction_factor"],
                                                **common),
        "median": lambda: MedianStoppingRule(grace_period=grace, min_samples_required=cfg["min_samples_required"],
                                             **common),
        "none": FIFOScheduler,
    }
    return builders[cfg["name"]]()
