"""Running a search: Ray Tune + OptunaSearch (:mod:`~lensearch.search.samplers`), one Ray Train run per trial,
MLflow logging from the driver (:mod:`~lensearch.search.tracking`), resume, the refit phase
(:mod:`~lensearch.search.refit`), and the outcome (:mod:`~lensearch.search.results`) with its leaderboard
(:mod:`~lensearch.search.leaderboard`). Where a search lives on disk: :mod:`~lensearch.search.layout`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lensearch.errors import UserError, expect
from lensearch.search.layout import (BUDGET, LATENCY_CACHE, OPTUNA_JOURNAL, RUN_FILE, SEARCH_FILE, SEARCHES, TRIALS,
                                     TUNE, absolute, hold_search_name, resolve_search_dir, resume_command,
                                     resumed_origin, search_name, write_origin)
from lensearch.search.leaderboard import ProgressPrinter, leaderboard
from lensearch.search.refit import REFIT, REFIT_OF, START_S, load_refit_config, pick, refit_seconds
from lensearch.search.results import DOWNSTREAM_METRIC, SearchOutcome, outcome_from_results, summary_metrics
from lensearch.search.samplers import make_scheduler, make_searcher, stop_epochs
from lensearch.search.schema import INCOMPARABLE_METRICS, SearchFile, load_search
from lensearch.search.scheduler_state import STATE_FILE as SCHEDULER_STATE
from lensearch.search.scheduler_state import SchedulerStateKeeper, keepers
from lensearch.training.config import MONITORABLE, resolve_run_config
from lensearch.training.runinfo import RunInfo
from lensearch.training.runner import Resources


# ------------------------------------------------------------------------------------------ the trial
@dataclass(frozen=True)
class TrialSetup:
    """What every trial of one search shares: ``tune.with_parameters`` pickles it into Ray's object store once
    and hands it to each :func:`trial_function`. Built afresh by ``run_search`` on every start and resume."""

    run: RunInfo                          # the run info of every trial, without its ``dir`` (set per trial)
    resources: Resources                  # what one trial uses (resolved to the cluster)
    trials_dir: str                       # the driver's trials folder: <trials_dir>/<trial_id> is a trial's folder
    data: dict[str, Any]                  # the search's data section, the ``data`` of every run configuration
    max_epochs: int                       # ``train.epochs`` of every trial
    space: Any = None                     # the compiled space (search/space.py); None: train ``config``
    config: dict[str, Any] | None = None  # the one fixed run configuration (``lensearch train``)
    monitor: str | None = None            # ``train.monitor`` default: the primary objective, when monitorable
    trial_time_s: float | None = None     # budget.trial_time_s: each trial's own time limit
    refit_s: float = 0.0                  # the refit phase's seconds (search/refit.py)
    trials_uri: str | None = None         # a remote store: the trials folder's URI


def trial_function(params: dict[str, Any], setup: TrialSetup) -> None:
    """The Tune trainable: materialise the sampled point into a run configuration and train it."""
    from ray import tune

    from lensearch.training.runner import run_in_trial

    space = setup.space
    trials_dir = setup.trials_uri or Path(setup.trials_dir)  # a URI with a remote store
    if REFIT_OF in params:  # the refit phase: continue a trial of the search (search/refit.py)
        config = load_refit_config(trials_dir, params[REFIT_OF], setup.refit_s)
    else:
        config = space.materialize(params) if space is not None else dict(setup.config)
        train = {"monitor": setup.monitor} if setup.monitor else {}  # best.pt follows the objective
        config["train"] = {**train, **(config.get("train") or {}), "epochs": setup.max_epochs}
        if setup.trial_time_s:
            config["train"]["time_limit_s"] = float(setup.trial_time_s)
    config["data"] = setup.data
    config = resolve_run_config(config)
    trial_id = tune.get_context().get_trial_id()
    run = setup.run.replace(dir=str(Path(setup.trials_dir) / trial_id))
    if REFIT_OF in params:  # its time budget may end it at any epoch: a grid at every improvement
        run = run.replace(grid_epochs=None)
    if setup.trials_uri:  # a remote store: a node-local folder, mirrored to the store (training/remote.py)
        from lensearch.storage import join
        from lensearch.training.remote import pull, scratch_dir

        remote_dir = join(setup.trials_uri, trial_id)
        run = run.replace(remote_dir=remote_dir, dir=str(scratch_dir(remote_dir)))
        pull(run, ".raised.pkl")
    # Tune restarts a failed trial (budget.max_retries) whatever the cause; only a process that died is worth
    # a retry. An error the trial raised itself (a non-finite loss, a bad configuration) would only happen
    # again: a restarted trial re-raises it at once instead of training again.
    failed = Path(run.dir) / ".raised.pkl"
    if failed.exists():
        import pickle

        raise pickle.loads(failed.read_bytes())
    try:
        run_in_trial(config, run, setup.resources, name=trial_id)
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
            from lensearch.training.remote import publish

            publish(run, failed.name)  # a restart on another node re-raises it too
        raise


# ------------------------------------------------------------------------------------------ running
@dataclass
class SearchOptions:
    num_samples: int | None = None
    max_epochs: int | None = None
    address: str | None = None
    tracking_uri: str | None = None
    store: Path | str | None = None      # None: ./mlruns under root (resuming: the store the search started in);
                                         # a URI (s3://bucket/prefix): object storage (search/remote.py)
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
    stop: Any = None                     # a Ray Tune stopper (benchmarks): may end trials or the search early
    system_metrics: float | None = None  # sample CPU/GPU/memory into each trial's MLflow run every N seconds


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

    from lensearch.search.tracking import (MLflowTracker, SearchInfo, check_tracking_uri, default_tracking_uri,
                                           file_digest)
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
    from lensearch.search.remote import StoreMirror, store_of
    from lensearch.storage import carried_env, is_uri, join

    # a URI store (s3://...): the driver works in a local copy of the search directory (search/remote.py)
    remote = store_of(str(opts.store) if opts.store is not None else None, opts.resume)
    store = remote.local if remote is not None else absolute(opts.store or "mlruns", opts.root)
    if opts.tracking_uri:
        check_tracking_uri(opts.tracking_uri)
    search_dir, resuming = (remote.resolve_search_dir(search.name, opts.resume) if remote is not None
                            else resolve_search_dir(search, store / SEARCHES, opts.resume))
    search_uri = remote.search_uri(search_dir) if remote is not None else None
    storage_path = search_uri or str(search_dir)  # where Ray Tune keeps its experiment state
    origin = resumed_origin(search_dir, opts.store, opts.tracking_uri, opts.root) if resuming else {}
    expect(not resuming or tune.Tuner.can_restore(join(storage_path, TUNE)),
           f"--resume: {search_uri or search_dir} holds no restorable search state")  # before Ray starts
    if remote is None:
        store = Path(origin.get("store") or store)
    tracking_uri = origin.get("tracking_uri") or opts.tracking_uri
    expect(tracking_uri or remote is None, f"--store {remote.uri if remote else ''}: an object store holds no MLflow "
           f"database; give --tracking-uri http://HOST:PORT (an MLflow tracking server, see docs/cluster.md)")
    tracking_uri = tracking_uri or default_tracking_uri(store, create=False)
    if opts.address and opts.address != "auto":
        from lensearch.training.cluster import check_reachable

        check_reachable(opts.address)  # before anything is written for this search
    running = hold_search_name(store / SEARCHES, search, resuming) if fixed_config is None else None
    budget_file = search_dir / BUDGET
    recorded = json.loads(budget_file.read_text()) if resuming and budget_file.exists() else None
    if recorded is not None and fixed_config is None and (search_dir / SEARCH_FILE).exists():
        # Continue exactly what was started: the recorded search file and budget, not today's edits/flags
        # (and its name, which a file without `name:` took from its own file name, not from "search.yaml").
        search = load_search(search_dir / SEARCH_FILE)
        name = origin.get("name") or search_name(search_dir)
        if name != search.name:
            from lensearch.search.schema import parse_search

            search = parse_search({**search.raw, "name": name}, search.path)

    try:
        if recorded is None:
            _check_named_data(search, opts)
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
                budget["data_path"] = str(opts.data) if is_uri(str(opts.data)) else str(Path(opts.data).resolve())
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
        expect(run_info.has_clean or not wanted,
               f"{search.path}: {wanted[0] if wanted else ''} needs noise-free HR (hr_clean), which "
               f"{run_info.data_path} does not have; use val_psnr / val_ssim / val_mse")
        _check_patch_sizes(search, fixed_config, run_info.data_path)
        val_images = _val_max_images(search, fixed_config)
        reference = _reference(run_info.data_path, val_images)
        downstream = None
        if DOWNSTREAM_METRIC in _metrics_named(search, fixed_config):  # train (or reuse) the frozen classifier
            from lensearch.training.frozen_classifier import prepare_downstream

            say = None if opts.quiet else (lambda text: print(f"lensearch: {text}", file=sys.stderr, flush=True))
            try:
                downstream, aucs = prepare_downstream(run_info.data_path, search.downstream, store / "classifiers",
                                                      val_images, log=say)
            except UserError as err:
                raise UserError(f"{search.path}: {err}") from None
            reference.update(aucs)
            if remote is not None:  # trials on other nodes fetch it from the store
                classifier = join(remote.uri, "classifiers", Path(downstream["path"]).name)
                from lensearch.storage import exists, upload

                if not exists(classifier):
                    upload(downstream["path"], classifier)
                downstream = {**downstream, "path": classifier}
        run_info = run_info.replace(reference=reference, downstream=downstream)
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
        record = search_dir / (RUN_FILE if fixed_config is not None else SEARCH_FILE)
        if not resuming:
            budget_file.write_text(json.dumps(budget))
            write_origin(search_dir, search.name, remote.uri if remote is not None else store, tracking_uri,
                         run_info.data_name)
            if fixed_config is not None:
                record.write_text(yaml.safe_dump(fixed_config, sort_keys=False))
            else:
                shutil.copyfile(search.path, record)
        if remote is not None:
            remote.push(search_dir)
        trials_dir = search_dir / TRIALS
        refit_s = refit_seconds(budget) if fixed_config is None and len(search.objectives) == 1 else 0.0
        trial_run = run_info.replace(
            measure_latency="latency_ms" in _metrics_named(search, fixed_config), kill_at_epoch=_fault_injection(),
            storage_env=carried_env() if remote is not None or run_info.data_uri is not None else None,
            latency_cache=str(search_dir / LATENCY_CACHE),
            grid_epochs=stop_epochs(search, max_epochs) if fixed_config is None else None)
        setup = TrialSetup(run=trial_run, resources=resources, trials_dir=str(trials_dir), data=search.data,
                           max_epochs=max_epochs, space=None if fixed_config is not None else search.space,
                           config=fixed_config, trial_time_s=budget.get("trial_time_s"), refit_s=refit_s,
                           trials_uri=remote.trials_uri(search_dir) if remote is not None else None,
                           monitor=search.primary.metric if search.primary.metric in MONITORABLE else None)
        trainable = tune.with_resources(tune.with_parameters(trial_function, setup=setup),
                                        resources.trial_bundle())
        primary = search.primary
        max_retries = int(budget.get("max_retries", 1))
        info = SearchInfo(
            name=search.name, max_epochs=max_epochs, trials_dir=trials_dir,
            objectives=[(o.metric, o.mode) for o in search.objectives],
            log_checkpoints=opts.log_checkpoints, system_metrics=opts.system_metrics, max_retries=max_retries,
            params={"num_samples": budget["num_samples"], "max_epochs": max_epochs,
                    "early_stopping": search.early_stopping["name"], "searcher": search.searcher["name"],
                    "searcher_seed": search.searcher["seed"], "workers_per_trial": resources.workers,
                    "use_gpu": bool(resources.use_gpu), "max_concurrent": concurrency,
                    "data": run_info.data_name,
                    # what decides the results besides the code: data file contents (versions are tags)
                    "data_sha256": file_digest(run_info.data_path, store / "digests.json"),
                    "objective": ", ".join(f"{o.metric} {o.mode}" for o in search.objectives)},
            artifacts=[record],
            tags={"lensearch.search_file": str(search.path)},
            # a remote store: the tracker fetches each trial's best.pt and sample grid from the store
            trials_uri=setup.trials_uri, search_uri=search_uri,
            # MLflow's dataset inputs name the URI, digested from the local copy
            data_local=run_info.data_path if run_info.data_uri is not None else None)
        tracker = MLflowTracker(tracking_uri, search.name, search_dir, info, store=None if remote else store)
        printer = ProgressPrinter(primary.metric, max_epochs, max_retries, setup.trials_uri or str(trials_dir))
        callbacks = [tracker] + ([StoreMirror(remote, search_dir)] if remote is not None else []) \
            + ([] if opts.quiet else [printer]) + opts.callbacks
        if not opts.quiet:
            print(f"lensearch: search '{search.name}' -> {search_uri or search_dir}\n"
                  f"lensearch: {budget['num_samples']} trials x <= {max_epochs} epochs, {resources.workers} "
                  f"worker(s)/trial ({resources.cpus_per_worker:g} CPU{' + GPU' if resources.use_gpu else ''}"
                  f" each), up to {concurrency} at once; MLflow: {tracking_uri}", file=sys.stderr, flush=True)
        tune_dir = join(storage_path, TUNE)  # Tune syncs this folder wholesale: our own files stay outside it
        if resuming and tune.Tuner.can_restore(tune_dir):
            tuner = tune.Tuner.restore(tune_dir, trainable=trainable, resume_unfinished=True,
                                       resume_errored=False, restart_errored=False)
            _relocate_restored(tuner, search_dir, search_uri)
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
                    time_budget_s=(budget["time_budget_s"] - refit_s) if budget["time_budget_s"] else None,
                    reuse_actors=reuse_actors(resources))
            tuner = tune.Tuner(trainable, tune_config=tune_config, run_config=tune.RunConfig(
                # a copy: Tune appends its own loggers (open files) to the list, which a refit could not pickle
                name=TUNE, storage_path=storage_path, verbose=0,
                # + the scheduler's records, saved in search_dir and restored on --resume (scheduler_state.py)
                callbacks=list(callbacks) + keepers(tune_config.scheduler, search_dir, quiet=opts.quiet,
                                                    uri=search_uri),
                failure_config=tune.FailureConfig(max_failures=max_retries), stop=opts.stop))
        grid, interrupted = _fit_noting_interrupt(tuner)
        tracker.reload()
        _pull_trials(search_dir, search_uri)
        outcome = outcome_from_results(search, grid, search_dir, tracker, tracking_uri, max_epochs,
                                       time.time() - t0, interrupted, timed=bool(budget.get("time_budget_s")))
        outcome.reference = reference
        outcome.search_uri = search_uri
        if refit_s and not outcome.interrupted:
            _refit(outcome, search, trainable, refit_s, concurrency, callbacks, tracker, max_epochs, t0,
                   quiet=opts.quiet)
        if fixed_config is None:
            outcome.resume_command = resume_command(search_dir, opts.address, search_uri)
        for row in outcome.rows:  # trials Tune cut at the time budget: it closes nothing for them
            if row.state.startswith("cut by"):
                tracker.close_trial(row.trial_id, "FINISHED", row.state)
        if search_uri is not None:  # the stored checkpoints, not the driver's copies
            for row in outcome.rows:
                if row.checkpoint:
                    row.checkpoint = join(search_uri, TRIALS, row.trial_id, "checkpoints", "best.pt")
        tracker.finish_search(summary_metrics(outcome), leaderboard(outcome),
                              status="KILLED" if outcome.interrupted else "FINISHED")
        return outcome
    finally:
        handle.close()
        if remote is not None and search_dir.is_dir():
            try:
                remote.push(search_dir)  # the driver's files as they ended
            except Exception as err:
                print(f"lensearch: could not upload {search_dir.name} to {remote.uri}: {err}", file=sys.stderr)
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
    from lensearch.storage import join

    storage_path = outcome.search_uri or str(search_dir)
    refit_dir = join(storage_path, REFIT)
    if tune.Tuner.can_restore(refit_dir):
        tuner = tune.Tuner.restore(refit_dir, trainable=trainable, resume_unfinished=True,
                                   resume_errored=False, restart_errored=False)
    else:
        tuner = tune.Tuner(trainable, param_space={REFIT_OF: tune.grid_search([r.trial_id for r in chosen])},
                           tune_config=tune.TuneConfig(max_concurrent_trials=concurrency,
                                                       time_budget_s=seconds + START_S),
                           run_config=tune.RunConfig(name=REFIT, storage_path=storage_path,
                                                     callbacks=list(callbacks), verbose=0,
                                                     failure_config=tune.FailureConfig(max_failures=0)))
    grid, interrupted = _fit_noting_interrupt(tuner)
    tracker.reload()
    _pull_trials(search_dir, outcome.search_uri)
    refits = outcome_from_results(search, grid, search_dir, tracker, outcome.tracking_uri, max_epochs, 0.0,
                                  interrupted, timed=True)
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


def _relocate_restored(tuner, search_dir: Path, search_uri: str | None) -> None:
    """Point what Tune unpickled on ``--resume`` (the MLflow tracker, the store mirror, the scheduler's keeper,
    the progress printer, the Optuna searcher's journal) at this run's search directory: they name the one the
    search started in, which differs when a search in object storage is resumed from another machine (another
    cache) or a local one was moved."""
    try:  # (Tune offers no public way)
        restored = tuner._local_tuner.get_run_config().callbacks or []
        searcher = tuner._local_tuner._tune_config.search_alg
    except AttributeError:  # pragma: no cover - Tune's internals moved: they keep their old paths
        return
    if hasattr(searcher, "relocate"):
        searcher.relocate(search_dir / OPTUNA_JOURNAL)
    for callback in restored:
        if isinstance(callback, SchedulerStateKeeper):
            from lensearch.storage import join

            callback.relocate(search_dir, join(search_uri, SCHEDULER_STATE) if search_uri else None)
        elif hasattr(callback, "relocate"):
            callback.relocate(search_dir)


def _pull_trials(search_dir: Path, search_uri: str | None) -> None:
    """With a remote store: the trials' ``best.pt`` and sample grids into the driver's copy (the leaderboard
    and the refit read them there)."""
    if search_uri is not None:
        from lensearch.search.remote import pull_trials

        pull_trials(search_uri, search_dir)


def _fault_injection() -> int | None:
    """Test-only: ``LENSEARCH_TEST_KILL_AT_EPOCH=N`` kills each trial's (last) worker once, after epoch N's
    checkpoint (``training.loop._fault_point``); read here on the driver so it reaches trials on any node."""
    value = os.environ.get("LENSEARCH_TEST_KILL_AT_EPOCH")
    return int(value) if value else None


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
        return list(node.args) if node.distribution == "categorical" else [node.args[0], node.args[1]]
    return []


def _check_named_data(search: SearchFile, opts: SearchOptions) -> None:
    """A data file the user named that does not exist, with no preset to simulate it (``--data``, or ``data.path``
    under every profile the file could run with): said before Ray starts, not after."""
    from lensearch.training.runner import prepare_data

    if opts.data is not None:
        candidates = [{"path": str(opts.data), "preset": None}]
    else:
        candidates = [search.with_profile(p).data for p in [None, *search.profiles]]
    named = [d for d in candidates if d.get("path") and not d.get("preset")]
    if not named or len(named) < len(candidates):
        return  # some profile simulates its data, or names none: the profile choice decides
    for data in named:
        path = Path(data["path"])
        if (path if path.is_absolute() else opts.root / path).exists():
            return
    try:
        prepare_data(named[0], opts.root, progress=False)
    except UserError as err:
        raise UserError(f"{search.path}: {err}") from None


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
    from lensearch.evaluation import baseline_metrics

    base = baseline_metrics(data_path, split="val", methods=("bicubic",), max_images=max_images or None)
    out = {f"bicubic_val_{k}": v for k, v in base["methods"]["bicubic"].items()}
    out.update({f"noise_ceiling_val_{k}": v for k, v in (base.get("noise_ceiling") or {}).items()})
    return out


def reuse_actors(resources: Resources) -> bool:
    """Whether a finished trial's process runs the next trial (Tune's ``reuse_actors``; its default is off).

    On for single-worker trials, which train in the trial process itself: the next trial then skips starting a
    Python process and importing torch and lensearch, and finds the training data already in memory
    (:mod:`lensearch.data.dataset`'s per-process cache). Everything a trial depends on is set up again by
    :func:`~lensearch.training.loop.fit` (seeds, threads, model, optimizer, loaders). Off for multi-worker trials:
    their process only drives a Ray Train run, whose own actors start anew for every trial anyway.
    """
    return resources.workers == 1


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
    search = parse_search({"name": name, "data": config["data"], "early_stopping": {"name": "none"},
                           "budget": {"num_samples": 1, "max_epochs": config["train"]["epochs"]},
                           "space": {"model": {"name": config["model"]["name"]}},
                           "objective": {"metric": monitor, "mode": MONITORABLE[monitor]}},
                          Path(source or f"{name}.yaml"))
    if opts.cpus_per_worker is None:  # one run: let it use the whole machine (capped to the cluster)
        opts = dataclasses.replace(opts, cpus_per_worker=float(os.cpu_count() or 1))
    return run_search(search, opts, fixed_config=config)
