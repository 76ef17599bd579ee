"""Assembling and running a search: Ray Tune + OptunaSearch (seeded sampler) + an early-stopping scheduler,
one Ray Train run per trial, MLflow logging from the driver, resume, and the final leaderboard.

Layout of one search on disk (``<store>/searches/<name>-<timestamp>/``): ``search.yaml`` (the file as run),
``budget.json`` (the budget it started with), ``origin.json`` (its name, store, tracking URI and data file, which
``--resume`` reuses from any working directory), ``mlflow_runs.json`` (trial -> MLflow run),
``trials/<trial_id>/{checkpoints/{best,last}.pt, samples.png}`` and ``tune/`` (Ray Tune's experiment state, which
Tune re-uploads wholesale, so nothing of ours lives there).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from ray.tune import Callback

from lensearch.errors import UserError, expect
from lensearch.search.refit import REFIT, REFIT_OF, START_S, load_refit_config, pick, refit_seconds
from lensearch.search.schema import INCOMPARABLE_METRICS, SearchFile, load_search
from lensearch.search.tracking import (CUT_BY_TIME_BUDGET, FULL_BUDGET_STATES, end_state, error_summary,
                                       retry_message,
                                       trial_error_message)
from lensearch.training.config import MONITORABLE, resolve_run_config
from lensearch.training.runner import Resources

SEARCHES = "searches"
TRIALS = "trials"
TUNE = "tune"
BUDGET = "budget.json"  # the budget a search started with (CLI overrides applied), reused by --resume
OPTUNA_JOURNAL = "optuna.journal"  # the search's Optuna study (JournalStorage file), kept across --resume
ORIGIN = "origin.json"  # the search's name, store, tracking URI and data file, reused by --resume
COST_METRICS = ("params", "flops", "latency_ms")
DOWNSTREAM_METRIC = "val_downstream_auc"  # lensearch.training.frozen_classifier.METRIC


# ------------------------------------------------------------------------------------------ searcher
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


def make_scheduler(search: SearchFile, max_epochs: int, *, notice=None):
    """The early-stopping scheduler of ``search`` (``time_attr = epoch``, on the primary objective).

    A multi-objective search gets **no early stopping** (FIFO, every trial runs ``max_epochs``): Ray's
    schedulers rank trials by one metric, so ASHA/HyperBand/median would cut trials on the primary
    objective alone (a small model good on ``params`` but slow to rise on ``val_psnr`` would be stopped),
    and a front must compare trials at one budget. A configured scheduler is then ignored with a one-line
    notice (``notice``: a callable taking the line; default: print to stderr).
    """
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, HyperBandScheduler, MedianStoppingRule

    cfg, obj = search.scheduler, search.primary
    if search.multi_objective:
        if cfg["name"] != "none":
            line = (f"lensearch: multi-objective search: scheduler '{cfg['name']}' ignored, no early stopping "
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


# ------------------------------------------------------------------------------------------ the trial
def trial_function(params: dict[str, Any], setup: dict[str, Any]) -> None:
    """The Tune trainable: materialise the sampled point into a run configuration and train it."""
    from ray import tune

    from lensearch.training.runner import run_in_trial

    space = setup["space"]
    if REFIT_OF in params:  # the refit phase: continue a trial of the search (search/refit.py)
        config = load_refit_config(Path(setup["trials_dir"]), params[REFIT_OF], setup["refit_s"])
    else:
        config = space.materialize(params) if space is not None else dict(setup["config"])
        train = {"monitor": setup["monitor"]} if setup.get("monitor") else {}  # best.pt follows the objective
        config["train"] = {**train, **(config.get("train") or {}), "epochs": setup["max_epochs"]}
        if setup.get("trial_time_s"):
            config["train"]["time_limit_s"] = float(setup["trial_time_s"])
    config["data"] = setup["data"]
    config = resolve_run_config(config)
    trial_id = tune.get_context().get_trial_id()
    run = {**setup["run"], "dir": str(Path(setup["trials_dir"]) / trial_id)}
    # Tune restarts a failed trial (budget.max_retries) whatever the cause; only a process that died is worth
    # a retry. An error the trial raised itself (a non-finite loss, a bad configuration) would only happen
    # again: a restarted trial re-raises it at once instead of training again.
    failed = Path(run["dir"]) / ".raised.pkl"
    if failed.exists():
        import pickle

        raise pickle.loads(failed.read_bytes())
    try:
        run_in_trial(config, run, setup["resources"], name=trial_id)
    except Exception as err:
        from lensearch.search.tracking import death_cause

        if death_cause(f"{type(err).__name__}: {err}\n{err.__cause__!s}") is None:
            import pickle

            try:
                blob = pickle.dumps(err)
            except Exception:
                blob = pickle.dumps(RuntimeError(f"{type(err).__name__}: {err}"))
            failed.parent.mkdir(parents=True, exist_ok=True)
            failed.write_bytes(blob)
        raise


# ------------------------------------------------------------------------------------------ progress
class ProgressPrinter(Callback):
    """One line per trial event on stderr: start, each epoch's objective, end state."""

    def __init__(self, metric: str, max_epochs: int, max_retries: int = 0):
        self.metric, self.max_epochs, self.max_retries = metric, max_epochs, max_retries
        self.t0 = time.time()

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
        from lensearch.search.tracking import death_cause, trial_error_text

        if death_cause(trial_error_text(trial)) is None:
            return  # an error it raised: restarted only to re-raise it (trial_function), shown as errored
        self._say(f"trial {trial.trial_id} {retry_message(trial, getattr(self, 'max_retries', 0))}")


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


# ------------------------------------------------------------------------------------------ running
@dataclass
class SearchOptions:
    num_samples: int | None = None
    max_epochs: int | None = None
    address: str | None = None
    tracking_uri: str | None = None
    store: Path | None = None            # None: ./mlruns under root (resuming: the store the search started in)
    resume: bool | str = False           # True: latest search of this name; str: a search directory
    workers: int | None = None
    gpu: str | None = None               # auto | on | off
    log_checkpoints: bool = True
    time_budget_s: float | None = None   # override budget.time_budget_s
    profile: str | None = None           # a profile of the search file (default: chosen for the cluster)
    data: Path | None = None             # train on this HDF5 file instead of the file's data section
    quiet: bool = False
    debug: bool = False                  # let Ray print each failed trial's whole traceback too
    root: Path = field(default_factory=Path.cwd)
    cpus_per_worker: float | None = None  # override resources.cpus_per_worker (capped to what fits)
    max_retries: int | None = None       # override budget.max_retries (restarts of a trial whose process died)
    callbacks: list = field(default_factory=list)  # extra Ray Tune callbacks (benchmarks, notebooks)
    system_metrics: float | None = None  # sample CPU/GPU/memory into each trial's MLflow run every N seconds


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

    @property
    def finished(self) -> list[TrialRow]:
        return [r for r in self.rows if r.epochs > 0 and r.best]

    def best(self) -> TrialRow | None:
        metric, mode = self.objectives[0]
        rows = [r for r in self.finished if metric in r.best]
        if not rows:
            return None
        return (max if mode == "max" else min)(rows, key=lambda r: r.best[metric])


_STAMPED = r"-\d{8}-\d{6}(-\d+)?$"  # <name>-<YYYYmmdd-HHMMSS>[-n]


def _resolve_search_dir(search: SearchFile, searches: Path, resume: bool | str) -> tuple[Path, bool]:
    """The search's directory and whether it is resumed (a new one gets a new time-stamped directory; while one
    of its name runs, :func:`hold_search_name` refuses a second)."""
    if isinstance(resume, str):
        path = Path(resume).resolve()
        expect(path.is_dir(), f"--resume {resume}: no such search directory")
        return path, True
    pattern = re.compile(re.escape(search.name) + _STAMPED)  # not "smoke-big-..." for "smoke"
    candidates = sorted(p for p in searches.glob(f"{search.name}-*") if p.is_dir() and pattern.match(p.name))
    if resume:
        expect(candidates, f"--resume: no earlier search named '{search.name}' under {searches}")
        return candidates[-1], True
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = searches / f"{search.name}-{stamp}"
    n = 1
    while path.exists():
        n += 1
        path = searches / f"{search.name}-{stamp}-{n}"
    return path, False


def hold_search_name(searches: Path, search: SearchFile, resuming: bool):
    """Claim ``search.name`` in this store for as long as this process runs it (an exclusive ``flock`` on
    ``searches/.<name>.lock``, released on exit even after ``kill -9``): a second search of the same name started
    meanwhile, resumed or not, is refused in one line instead of writing beside the first one. Returns the open
    lock file (close it to release)."""
    import fcntl

    searches.mkdir(parents=True, exist_ok=True)
    lock = open(searches / f".{search.name}.lock", "a+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        pid = lock.read().strip() or "?"
        lock.close()
        what = "resume it" if resuming else "start another one of that name (the file's name: key)"
        raise UserError(f"{search.path}: a search named '{search.name}' is running in another process (pid {pid}) "
                        f"in the store {searches.parent}; wait until it ends to {what}") from None
    lock.truncate(0)
    lock.write(str(os.getpid()))
    lock.flush()
    return lock


def _resources(search: SearchFile, opts: SearchOptions, cluster: dict[str, float]) -> Resources:
    res = search.resources
    gpu = opts.gpu or res["gpu"]
    use_gpu = {"auto": None, "on": True, "off": False, True: True, False: False}[gpu]
    return Resources(workers=res["workers"] if opts.workers is None else opts.workers, use_gpu=use_gpu,
                     cpus_per_worker=float(opts.cpus_per_worker or res["cpus_per_worker"]),
                     gpus_per_worker=float(res["gpus_per_worker"])).resolved(cluster)


def _check_system_metrics(interval: float | None) -> None:
    if interval is None:
        return
    expect(interval > 0, f"--system-metrics {interval:g}: the sampling interval must be > 0 seconds")
    try:
        import psutil  # noqa: F401  (MLflow's system metrics need it)
    except ImportError:
        raise UserError("--system-metrics needs psutil: pip install psutil") from None


def run_search(search: SearchFile, opts: SearchOptions, *, fixed_config: dict[str, Any] | None = None) -> SearchOutcome:
    """Run (or resume) ``search``. With ``fixed_config`` the space is ignored and one configuration is
    trained (``lensearch train``), tracked exactly like a search trial."""
    from ray import tune

    from lensearch.search.tracking import MLflowTracker, check_tracking_uri, default_tracking_uri, file_digest
    from lensearch.training.cluster import connect
    from lensearch.training.runner import prepare_data

    _check_system_metrics(opts.system_metrics)
    t0 = time.time()
    # a failed trial is one line (ProgressPrinter) and its traceback goes to MLflow (error.txt), not ~85 lines
    # of Tune's log on the terminal; --debug brings them back
    if opts.debug:
        os.environ["TUNE_PRINT_ALL_TRIAL_ERRORS"] = "1"
    else:
        os.environ.setdefault("TUNE_PRINT_ALL_TRIAL_ERRORS", "0")
    store = _absolute(opts.store or "mlruns", opts.root)
    if opts.tracking_uri:
        check_tracking_uri(opts.tracking_uri)
    search_dir, resuming = _resolve_search_dir(search, store / SEARCHES, opts.resume)
    origin = _resumed_origin(search_dir, opts) if resuming else {}
    expect(not resuming or tune.Tuner.can_restore(str(search_dir / TUNE)),
           f"--resume: {search_dir} holds no restorable search state")  # said before Ray starts, not after
    store = Path(origin.get("store") or store)
    tracking_uri = origin.get("tracking_uri") or opts.tracking_uri or default_tracking_uri(store, create=False)
    if opts.address and opts.address != "auto":
        from lensearch.training.cluster import check_reachable

        check_reachable(opts.address)  # before anything is written for this search
    running = hold_search_name(store / SEARCHES, search, resuming) if fixed_config is None else None
    budget_file = search_dir / BUDGET
    recorded = json.loads(budget_file.read_text()) if resuming and budget_file.exists() else None
    if recorded is not None and fixed_config is None and (search_dir / "search.yaml").exists():
        # Continue exactly what was started: the recorded search file and budget, not today's edits/flags
        # (and its name, which a file without `name:` took from its own file name, not from "search.yaml").
        search = load_search(search_dir / "search.yaml")
        name = origin.get("name") or re.sub(_STAMPED, "", search_dir.name)
        if name != search.name:
            from lensearch.search.schema import parse_search

            search = parse_search({**search.raw, "name": name}, search.path)

    try:
        handle = connect(opts.address)
    except BaseException:
        if running is not None:
            running.close()
        raise
    try:
        cluster = handle.resources()
        if recorded is not None:
            search = search.with_profile(recorded.get("profile"))
            budget = recorded
            if not opts.quiet and any(v is not None for v in (opts.profile, opts.data, opts.time_budget_s,
                                                              opts.num_samples, opts.max_epochs)):
                print("lensearch: --resume continues with the recorded search file, profile, data and budget; "
                      "--profile/--data/--time-budget/--num-samples/--max-epochs are ignored", file=sys.stderr)
        else:
            profile, why = choose_profile(search, cluster, opts.profile)
            search = search.with_profile(profile)
            if profile is not None and not opts.quiet:
                print(f"lensearch: profile '{profile}' ({why})", file=sys.stderr, flush=True)
            budget = {**search.budget, "profile": profile}
            for key, value in (("num_samples", opts.num_samples), ("max_epochs", opts.max_epochs),
                               ("time_budget_s", opts.time_budget_s), ("max_retries", opts.max_retries)):
                if value is not None:
                    budget[key] = value
            if opts.data is not None:
                budget["data_path"] = str(Path(opts.data).resolve())
            bad = [o.metric for o in search.objectives if o.metric in INCOMPARABLE_METRICS]
            expect(not bad or budget["num_samples"] == 1 or fixed_config is not None,
                   f"{search.path}: objective: {bad[0] if bad else ''} cannot rank {budget['num_samples']} trials "
                   f"(each trial's loss is in its own normalization and loss terms); use a val_* image metric")
        if budget.get("data_path"):
            search.data = {**search.data, "path": budget["data_path"], "preset": None}
        elif origin.get("data_path"):  # the file it started on, wherever the resume is run from
            search.data = {**search.data, "path": origin["data_path"]}
        max_epochs = budget["max_epochs"]

        try:
            run_info = prepare_data(search.data, opts.root, progress=not opts.quiet)
        except UserError as err:
            raise UserError(f"{search.path}: {err}") from None
        wanted = [m for m in _metrics_named(search, fixed_config) if m.endswith("_clean")]
        expect(run_info["has_clean"] or not wanted,
               f"{search.path}: {wanted[0] if wanted else ''} needs noise-free HR (hr_clean), which "
               f"{run_info['data_path']} does not have; use val_psnr / val_ssim / val_mse")
        _check_patch_sizes(search, fixed_config, run_info["data_path"])
        val_images = _val_max_images(search, fixed_config)
        reference = _reference(run_info["data_path"], val_images)
        run_info["reference"] = reference
        if DOWNSTREAM_METRIC in _metrics_named(search, fixed_config):  # train (or reuse) the frozen classifier
            from lensearch.training.frozen_classifier import prepare_downstream

            say = None if opts.quiet else (lambda text: print(f"lensearch: {text}", file=sys.stderr, flush=True))
            try:
                run_info["downstream"], aucs = prepare_downstream(run_info["data_path"], search.downstream,
                                                                  store / "classifiers", val_images, log=say)
            except UserError as err:
                raise UserError(f"{search.path}: {err}") from None
            reference.update(aucs)
        resources = _resources(search, opts, cluster)
        concurrency = budget["max_concurrent"] or resources.max_concurrent(cluster)
        if fixed_config is None and recorded is None and not opts.quiet and not resources.use_gpu:
            # (CPU timings say nothing about a GPU cluster's trials)
            from lensearch.search.estimate import estimate_search

            _, lines = estimate_search(search, run_info, budget=budget, threads=resources.threads,
                                       workers=resources.workers, concurrency=concurrency)
            for line in lines:
                print(f"lensearch: {line}", file=sys.stderr, flush=True)
        search_dir.mkdir(parents=True, exist_ok=True)
        # the file as run: the search file, or for a single training the resolved run configuration
        record = search_dir / ("run.yaml" if fixed_config is not None else "search.yaml")
        if not resuming:
            budget_file.write_text(json.dumps(budget))
            (search_dir / ORIGIN).write_text(json.dumps({"name": search.name, "store": str(store),
                                                          "tracking_uri": tracking_uri,
                                                          "data_path": run_info["data_path"]}, indent=1))
            if fixed_config is not None:
                record.write_text(yaml.safe_dump(fixed_config, sort_keys=False))
            else:
                shutil.copyfile(search.path, record)
        trials_dir = search_dir / TRIALS
        refit_s = refit_seconds(budget) if fixed_config is None and len(search.objectives) == 1 else 0.0
        setup = {"refit_s": refit_s, "space": None if fixed_config is not None else search.space, "config": fixed_config,
                 "max_epochs": max_epochs, "data": search.data, "trial_time_s": budget.get("trial_time_s"),
                 "run": {**run_info, "measure_latency": "latency_ms" in _metrics_named(search, fixed_config),
                         **_fault_injection(),
                         "latency_cache": str(search_dir / "latency.json")},
                 "trials_dir": str(trials_dir), "resources": resources,
                 "monitor": search.primary.metric if search.primary.metric in MONITORABLE else None}
        trainable = tune.with_resources(tune.with_parameters(trial_function, setup=setup),
                                        resources.trial_bundle())
        primary = search.primary
        info = {
            "name": search.name, "max_epochs": max_epochs, "trials_dir": trials_dir,
            "objectives": [(o.metric, o.mode) for o in search.objectives],
            "log_checkpoints": opts.log_checkpoints, "system_metrics": opts.system_metrics,
            "params": {"num_samples": budget["num_samples"], "max_epochs": max_epochs,
                       "scheduler": search.scheduler["name"], "searcher": search.searcher["name"],
                       "searcher_seed": search.searcher["seed"], "workers_per_trial": resources.workers,
                       "use_gpu": bool(resources.use_gpu), "max_concurrent": concurrency,
                       "data": run_info["data_path"],
                       # what decides the results besides the code: data file contents (versions are tags)
                       "data_sha256": file_digest(run_info["data_path"], store / "digests.json"),
                       "objective": ", ".join(f"{o.metric} {o.mode}" for o in search.objectives)},
            "artifacts": [record],
            "tags": {"lensearch.search_file": str(search.path)},
        }
        tracker = MLflowTracker(tracking_uri, search.name, search_dir, info, store=store)
        max_retries = int(budget.get("max_retries", 1))
        tracker.info["max_retries"] = max_retries
        callbacks = [tracker] + ([] if opts.quiet else [ProgressPrinter(primary.metric, max_epochs, max_retries)]) \
            + opts.callbacks
        if not opts.quiet:
            print(f"lensearch: search '{search.name}' -> {search_dir}\n"
                  f"lensearch: {budget['num_samples']} trials x <= {max_epochs} epochs, {resources.workers} "
                  f"worker(s)/trial ({resources.cpus_per_worker:g} CPU{' + GPU' if resources.use_gpu else ''}"
                  f" each), up to {concurrency} at once; MLflow: {tracking_uri}", file=sys.stderr, flush=True)
        tune_dir = search_dir / TUNE  # Tune syncs this folder wholesale: our own files stay outside it
        from lensearch.search.scheduler_state import keepers

        if resuming and tune.Tuner.can_restore(str(tune_dir)):
            tuner = tune.Tuner.restore(str(tune_dir), trainable=trainable, resume_unfinished=True,
                                       resume_errored=False, restart_errored=False)
        else:
            expect(not resuming, f"--resume: {search_dir} holds no restorable search state")
            if fixed_config is not None:
                tune_config = tune.TuneConfig(num_samples=1, max_concurrent_trials=1)
            else:
                tune_config = tune.TuneConfig(
                    search_alg=make_searcher(search, max_epochs, num_samples=budget["num_samples"],
                                             journal=search_dir / OPTUNA_JOURNAL),
                    scheduler=make_scheduler(search, max_epochs, notice=(lambda _: None) if opts.quiet else None),
                    num_samples=budget["num_samples"], max_concurrent_trials=concurrency,
                    time_budget_s=(budget["time_budget_s"] - refit_s) if budget["time_budget_s"] else None)
            tuner = tune.Tuner(trainable, tune_config=tune_config, run_config=tune.RunConfig(
                # a copy: Tune appends its own loggers (open files) to the list, which a refit could not pickle
                name=TUNE, storage_path=str(search_dir), verbose=0,
                # + the scheduler's records, saved in search_dir and restored on --resume (scheduler_state.py)
                callbacks=list(callbacks) + keepers(tune_config.scheduler, search_dir, quiet=opts.quiet),
                failure_config=tune.FailureConfig(max_failures=max_retries)))
        grid, interrupted = _fit_noting_interrupt(tuner)
        tracker.reload()
        outcome = _outcome(search, grid, search_dir, tracker, tracking_uri, max_epochs, time.time() - t0,
                           interrupted, timed=bool(budget.get("time_budget_s")))
        outcome.reference = reference
        if refit_s and not outcome.interrupted:
            _refit(outcome, search, trainable, refit_s, concurrency, callbacks, tracker, max_epochs, t0,
                   quiet=opts.quiet)
        if fixed_config is None:
            outcome.resume_command = resume_command(search_dir, opts.address)
        for row in outcome.rows:  # trials Tune cut at the time budget: it closes nothing for them
            if row.state.startswith("cut by"):
                tracker.close_trial(row.trial_id, "FINISHED", row.state)
        tracker.finish_search(summary_metrics(outcome), leaderboard(outcome),
                              status="KILLED" if outcome.interrupted else "FINISHED")
        return outcome
    finally:
        handle.close()
        if running is not None:
            running.close()  # releases the name


def _refit(outcome: SearchOutcome, search: SearchFile, trainable, seconds: float, concurrency: int,
           callbacks: list, tracker, max_epochs: int, t0: float, *, quiet: bool) -> None:
    """The refit phase (search/refit.py): the best trials continue for ``seconds``; their rows join
    ``outcome``."""
    from ray import tune

    search_dir = outcome.search_dir
    chosen = pick([r for r in outcome.rows if not r.state.startswith(("errored", "refit of"))],
                  outcome.objectives, concurrency)
    if not chosen:
        return
    if not quiet:
        print(f"lensearch: refit: {', '.join(r.trial_id for r in chosen)} continue for {seconds:.0f}s with a "
              f"fresh annealed schedule (budget.refit_share)", file=sys.stderr, flush=True)
    refit_dir = search_dir / REFIT
    if tune.Tuner.can_restore(str(refit_dir)):
        tuner = tune.Tuner.restore(str(refit_dir), trainable=trainable, resume_unfinished=True,
                                   resume_errored=False, restart_errored=False)
    else:
        tuner = tune.Tuner(trainable, param_space={REFIT_OF: tune.grid_search([r.trial_id for r in chosen])},
                           tune_config=tune.TuneConfig(max_concurrent_trials=concurrency,
                                                       time_budget_s=seconds + START_S),
                           run_config=tune.RunConfig(name=REFIT, storage_path=str(search_dir),
                                                     callbacks=list(callbacks), verbose=0,
                                                     failure_config=tune.FailureConfig(max_failures=0)))
    grid, interrupted = _fit_noting_interrupt(tuner)
    tracker.reload()
    refits = _outcome(search, grid, search_dir, tracker, outcome.tracking_uri, max_epochs, 0.0, interrupted,
                      timed=True)
    params = {r.trial_id: r.params for r in outcome.rows}
    for row in refits.rows:
        source = row.params.get(REFIT_OF)
        row.params = {**params.get(source, {}), **row.params}
        if not row.state.startswith(("refit of", "errored", "interrupted")):  # cut by the refit's time budget
            row.state = f"refit of {source}, cut at report {row.epochs}"
            tracker.close_trial(row.trial_id, "FINISHED", row.state)
    outcome.rows.extend(refits.rows)
    outcome.interrupted = interrupted
    outcome.seconds = time.time() - t0


def _absolute(path: str | Path, root: Path) -> Path:
    path = Path(path)
    return path if path.is_absolute() else (root / path).resolve()


def _resumed_origin(search_dir: Path, opts: SearchOptions) -> dict[str, Any]:
    """Where a resumed search logs (its ``origin.json``); an explicit --store/--tracking-uri that disagrees is
    a one-line error rather than a second, empty MLflow database that knows none of the search's runs."""
    path = search_dir / ORIGIN
    if not path.exists():  # a search from before origin.json: its store is the folder holding searches/
        store = search_dir.parent.parent
        return {"store": str(store)} if search_dir.parent.name == SEARCHES else {}
    origin = json.loads(path.read_text())
    if opts.store is not None and _absolute(opts.store, opts.root) != Path(origin["store"]):
        raise UserError(f"--store {opts.store}: the search in {search_dir} belongs to the store {origin['store']}; "
                        f"leave --store out to continue it there")
    if opts.tracking_uri and opts.tracking_uri != origin["tracking_uri"]:
        raise UserError(f"--tracking-uri {opts.tracking_uri}: the search in {search_dir} logs to "
                        f"{origin['tracking_uri']}; leave --tracking-uri out to continue it there")
    return origin


def resume_command(search_dir: Path, address: str | None = None) -> str:
    """The command line that continues the search in ``search_dir`` from any working directory: its own copy of
    the search file and its directory (which records the store, tracking URI and data file)."""
    import shlex

    search_dir = Path(search_dir).resolve()
    words = ["lensearch", "tune", str(search_dir / "search.yaml"), "--resume", str(search_dir)]
    if address:
        words += ["--address", address]
    return " ".join(shlex.quote(w) for w in words)


def _fault_injection() -> dict[str, int]:
    """Test-only: ``LENSEARCH_TEST_KILL_AT_EPOCH=N`` kills each trial's (last) worker once, after epoch N's
    checkpoint (``training.loop._fault_point``); read here on the driver so it reaches trials on any node."""
    value = os.environ.get("LENSEARCH_TEST_KILL_AT_EPOCH")
    return {"kill_at_epoch": int(value)} if value else {}


def _metrics_named(search: SearchFile, fixed_config: dict[str, Any] | None) -> list[str]:
    """Metrics the run will need: the objectives and every value ``train.monitor`` can take."""
    monitors = [m for m in _train_values(search, fixed_config, "monitor") if isinstance(m, str)]
    return [o.metric for o in search.objectives] + monitors


def choose_profile(search: SearchFile, cluster: dict[str, float], requested: str | None) -> tuple[str | None, str]:
    """The profile to run and why: the one asked for, else ``gpu`` on a cluster with a GPU, else ``cpu``."""
    if requested is not None:
        return requested, "asked for with --profile"
    names = search.profiles
    if not names:
        return None, "the file has no profiles"
    gpus, cpus = cluster.get("GPU", 0.0), cluster.get("CPU", 0.0)
    if gpus > 0 and "gpu" in names:
        return "gpu", f"the Ray cluster has {gpus:g} GPU(s); --profile cpu for the small one"
    if gpus == 0 and "cpu" in names:
        return "cpu", f"the Ray cluster has no GPU, {cpus:g} CPUs; --profile gpu for the full-size search"
    return None, "no profile fits this machine; the file as written"


def _train_values(search: SearchFile, fixed_config: dict[str, Any] | None, key: str) -> list[Any]:
    """Every value ``train.<key>`` can take in the space (or the fixed configuration's)."""
    from lensearch.search.space import Dist, Fixed, Section

    if fixed_config is not None:
        return [fixed_config["train"].get(key)]
    train = search.space.root.items.get("train")
    node = train.items.get(key) if isinstance(train, Section) else None
    if isinstance(node, Fixed):
        return [node.value]
    if isinstance(node, Dist):
        return list(node.args) if node.kind == "categorical" else [node.args[0], node.args[1]]
    return []


def _check_patch_sizes(search: SearchFile, fixed_config: dict[str, Any] | None, data_path: str) -> None:
    """A patch size that cannot fit the data is one line before Ray starts, not an error in every trial."""
    from lensearch.data.store import check_patch_size, open_h5

    info = open_h5(data_path)
    for value in _train_values(search, fixed_config, "patch_size"):
        if isinstance(value, int) and not isinstance(value, bool):
            try:
                check_patch_size(value, info, data_path)
            except UserError as err:
                where = "" if fixed_config is not None else "space."
                raise UserError(f"{search.path}: {where}{err.args[0].split(': ', 1)[1]}") from None


def _val_max_images(search: SearchFile, fixed_config: dict[str, Any] | None) -> int:
    """The validation images every trial is scored on (0 = the whole split), so the reference uses the same."""
    values = [v for v in _train_values(search, fixed_config, "val_max_images") if v is not None]
    expect(len(set(values)) <= 1, f"{search.path}: space.train.val_max_images: expected one fixed value (trials "
           f"and their bicubic reference must be scored on the same images), got {values}")
    return int(values[0]) if values else 0


def _reference(data_path: str, max_images: int = 0) -> dict[str, float]:
    """What every model must beat (bicubic) and what none can exceed against noisy HR (the noise ceiling),
    on exactly the validation images the trials are scored on (the first ``max_images``; 0 = all)."""
    from lensearch.data.baseline import baseline_metrics

    base = baseline_metrics(data_path, split="val", methods=("bicubic",), max_images=max_images or None)
    out = {f"bicubic_val_{k}": v for k, v in base["methods"]["bicubic"].items()}
    out.update({f"noise_ceiling_val_{k}": v for k, v in (base.get("noise_ceiling") or {}).items()})
    return out


def _fit_noting_interrupt(tuner):
    """``tuner.fit()`` and whether Ctrl-C (or SIGTERM) ended it.

    Tune catches SIGINT itself (it saves the experiment and returns normally) and, on that first signal,
    puts back the handler that was installed before ``fit``. So a sentinel handler that is back in place
    after ``fit`` means the run was interrupted. SIGTERM (``kill PID``, a batch scheduler's stop) is turned
    into that same SIGINT, so it too ends with the experiment saved, MLflow runs closed and a resume hint,
    instead of killing the driver on the spot and leaving its Ray processes behind.
    """
    if threading.current_thread() is not threading.main_thread() or os.environ.get("TUNE_DISABLE_SIGINT_HANDLER"):
        return tuner.fit(), False
    previous, previous_term = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)

    def sentinel(sig, frame):
        raise KeyboardInterrupt

    def term_as_int(sig, frame):
        signal.raise_signal(signal.SIGINT)

    signal.signal(signal.SIGINT, sentinel)
    signal.signal(signal.SIGTERM, term_as_int)
    try:
        grid = tuner.fit()
        return grid, signal.getsignal(signal.SIGINT) is sentinel
    finally:
        signal.signal(signal.SIGINT, previous)
        signal.signal(signal.SIGTERM, previous_term)


def train_one(config: dict[str, Any], name: str, opts: SearchOptions, source: Path | None = None) -> SearchOutcome:
    """Train one resolved run configuration as a one-trial search (no searcher, no early stopping), so it
    gets the same resources, checkpoints and MLflow logging as a search trial (``lensearch train``)."""
    from lensearch.search.schema import parse_search

    monitor = config["train"]["monitor"]
    search = parse_search({"name": name, "data": config["data"], "scheduler": {"name": "none"},
                           "budget": {"num_samples": 1, "max_epochs": config["train"]["epochs"]},
                           "space": {"model": {"name": config["model"]["name"]}},
                           "objective": {"metric": monitor, "mode": MONITORABLE[monitor]}},
                          Path(source or f"{name}.yaml"))
    if opts.cpus_per_worker is None:  # one run: let it use the whole machine (capped to the cluster)
        opts = dataclasses.replace(opts, cpus_per_worker=float(os.cpu_count() or 1))
    return run_search(search, opts, fixed_config=config)


def _outcome(search, grid, search_dir, tracker, tracking_uri, max_epochs, seconds, interrupted,
             timed: bool = False) -> SearchOutcome:
    """The search's rows from Tune's results; ``timed``: the search had a time budget (which Tune enforces by
    stopping running trials without telling any callback)."""
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
                best = {k: float(row[k]) for k in ("val_psnr", "val_ssim", "val_mse", "val_psnr_clean",
                                                   "val_ssim_clean", "val_psnr_gain", "val_gap_closed",
                                                   DOWNSTREAM_METRIC, *COST_METRICS, "epoch", "steps", "train_seconds")
                        if k in row and row[k] == row[k]}
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
        ckpt = Path(search_dir) / TRIALS / tid / "checkpoints" / "best.pt"
        params = {k: v for k, v in (result.config or {}).items()}
        rows.append(TrialRow(tid, state, epochs, best, params, str(ckpt) if ckpt.exists() else None,
                             tracker.run_id(tid)))
    return SearchOutcome(search.name, Path(search_dir), objectives, rows, tracker.parent_run_id, tracking_uri,
                         seconds, interrupted=interrupted, search_file=search.path)


def summary_metrics(outcome: SearchOutcome) -> dict[str, Any]:
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


def pareto_front(outcome: SearchOutcome) -> list[TrialRow]:
    """Trials not dominated on all objectives (multi-objective searches), among the trials that *completed*
    the full budget: a trial stopped early, interrupted or errored was scored after fewer epochs and is not
    comparable, so it is never on the front (nor does it knock a completed trial off it)."""
    rows = [r for r in outcome.finished
            if r.state.startswith(FULL_BUDGET_STATES) and all(m in r.best for m, _ in outcome.objectives)]

    def better_eq(a, b):
        return all((a.best[m] >= b.best[m]) if mode == "max" else (a.best[m] <= b.best[m])
                   for m, mode in outcome.objectives)

    return [r for r in rows if not any(better_eq(o, r) and o.best != r.best for o in rows if o is not r)]


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
