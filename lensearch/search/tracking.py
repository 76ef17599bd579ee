"""MLflow: one parent run per search, one child run per trial, all logged from the driver process.

Logging from the driver only avoids SQLite write contention ("database is locked") and keeps workers free
of MLflow. The default store is a SQLite database under the project's ``mlruns/`` folder with artifacts
beside it (MLflow 3.17 refuses the plain ``./mlruns`` file store); ``--tracking-uri`` points elsewhere.

Child runs get every sampled parameter under its path-qualified name (``model``, ``model.rdn.num_blocks``),
per-epoch metrics with ``step = epoch``, a final ``state`` tag (``completed``, ``stopped early at epoch k``,
``errored: <Type>: <message>``, with the full traceback as the artifact ``error.txt``), the sample grid (LR | bicubic | SR | HR | residual) and the best checkpoint.

Which MLflow run belongs to which trial is kept in ``mlflow_runs.json`` in the search directory, so a
resumed search keeps logging into the same runs and never logs a finished trial twice.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ray.tune import Callback

from lensearch import __version__
from lensearch.data.digest import file_digest, quick_digest  # noqa: F401  (re-exported)
from lensearch.errors import UserError
from lensearch.search.layout import best_checkpoint
from lensearch.search.refit import REFIT_OF, refit_state
from lensearch.storage import join
from lensearch.training.runner import error_line

STATE_FILE = "mlflow_runs.json"
# Result keys that are bookkeeping rather than metrics.
_SKIP = {"training_iteration", "timestamp", "time_this_iter_s", "time_total_s", "time_since_restore",
         "iterations_since_restore", "pid", "done", "epoch"}


def default_store(root: Path | None = None) -> Path:
    return (Path(root or Path.cwd()) / "mlruns").resolve()


def default_tracking_uri(store: Path, create: bool = True) -> str:
    """The SQLite database under ``store`` (``create``: make the folder, which SQLite needs to open it)."""
    if create:
        store.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{store / 'mlflow.db'}"


def check_tracking_uri(uri: str, timeout_s: float = 5.0) -> None:
    """Refuse a ``--tracking-uri`` that cannot work, in one line, before anything starts: an HTTP(S) server that
    does not answer (MLflow's client would retry for minutes), a SQLite database in a folder that does not
    exist, or a scheme MLflow does not know."""
    import urllib.error
    import urllib.parse
    import urllib.request

    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme in ("http", "https"):
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout_s):
                pass
        except urllib.error.HTTPError:
            pass  # something answers (a proxy, an older server without /health): MLflow will say more
        except (OSError, ValueError) as err:
            reason = getattr(err, "reason", None) or err
            reason = getattr(reason, "strerror", None) or reason
            raise UserError(f"--tracking-uri {uri}: no MLflow server answers there ({reason})") from None
    elif parsed.scheme == "sqlite":
        db = uri.removeprefix("sqlite:///")
        if db and db != ":memory:" and not Path(db).parent.is_dir():
            raise UserError(f"--tracking-uri {uri}: the folder {Path(db).parent} does not exist")
    elif parsed.scheme and parsed.scheme not in ("file", "databricks", "postgresql", "mysql", "mssql", "uc",
                                                 "databricks-uc") and "+" not in parsed.scheme:
        raise UserError(f"--tracking-uri {uri}: unknown scheme '{parsed.scheme}'; expected http(s)://HOST:PORT, "
                        f"sqlite:///PATH or another MLflow store URI")


# MLflow 3's UI opens an experiment by its kind: untagged ones may land on the GenAI traces view.
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")


def get_experiment_id(client, name: str, store: Path | None) -> str:
    """The experiment ``name`` (created with its artifacts under ``store`` when new), tagged as ML training."""
    exp = client.get_experiment_by_name(name)
    if exp is None:
        location = (store / "artifacts" / name).as_uri() if store is not None else None
        exp_id = client.create_experiment(name, artifact_location=location, tags=dict([EXPERIMENT_KIND]))
    else:
        exp_id = exp.experiment_id
        if exp.tags.get(EXPERIMENT_KIND[0]) is None:       # made by an older lensearch: tag it now
            client.set_experiment_tag(exp_id, *EXPERIMENT_KIND)
    return exp_id


def dataset_inputs(data_path: str | Path, digest: str) -> list:
    """MLflow dataset inputs for a trial: the HDF5 file's ``train`` and ``val`` splits, named ``<stem>/train`` and
    ``<stem>/val`` (MLflow keeps one input per dataset name and digest), each with its context tag."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    path = Path(data_path)
    return [DatasetInput(Dataset(name=f"{path.stem}/{split}", digest=digest, source_type="local",
                                 source=json.dumps({"uri": str(data_path), "split": f"split/{split}"}),
                                 schema=json.dumps({"format": "lensearch HDF5", "arrays": ["lr", "hr"]})),
                         tags=[InputTag("mlflow.data.context", split)])
            for split in ("train", "val")]


def versions() -> dict[str, str]:
    """The versions that decide a search's results (logged as ``version.*`` tags on the parent run)."""
    import h5py
    import mlflow
    import numpy
    import optuna
    import ray
    import torch

    return {"lensearch": __version__, "ray": ray.__version__, "torch": torch.__version__,
            "optuna": optuna.__version__, "mlflow": mlflow.__version__, "numpy": numpy.__version__,
            "h5py": h5py.__version__, "python": platform.python_version()}


def log_params(client, run_id: str, params: dict[str, Any]) -> None:
    """Log ``params`` (values as text, cut to MLflow's 6000 characters) in batches of 100 (MLflow's limit per
    call): one database write per batch, not one per parameter (the Tune driver's event loop waits for it)."""
    from mlflow.entities import Param

    items = [Param(str(k), str(v)[:6000]) for k, v in sorted(params.items())]
    for a in range(0, len(items), 100):
        client.log_batch(run_id, params=items[a:a + 100])


def _numeric(result: dict[str, Any]) -> dict[str, float]:
    out = {}
    for key, value in result.items():
        if key in _SKIP or key.startswith("config") or isinstance(value, bool):
            continue
        if isinstance(value, (int, float)) and math.isfinite(value):
            out[key] = float(value)
    return out


@dataclass(frozen=True)
class SearchInfo:
    """What :class:`MLflowTracker` needs to know about its search (built once by ``run_search``).

    Tune pickles the tracker with the experiment (``tuner.pkl``) and ``--resume`` uses that copy: the tracker
    pickles this as the plain mapping of :meth:`to_dict` (the form searches started before this class hold) and
    reads it back with :meth:`from_dict`.
    """

    name: str                                   # the search's name (MLflow parent run; child runs NAME-TRIAL)
    max_epochs: int                             # a trial that reached it "completed"
    trials_dir: Path                            # the driver's trials folder (trial_id/checkpoints, samples.png)
    objectives: list[tuple[str, str]] = field(default_factory=list)  # (metric, mode); not read by the tracker
    params: dict[str, Any] = field(default_factory=dict)   # logged on the parent run (``data``: the data file)
    artifacts: list[Path] = field(default_factory=list)    # files logged on the parent run
    tags: dict[str, str] = field(default_factory=dict)     # tags of the parent run
    log_checkpoints: bool = True                # log each trial's best.pt as an artifact
    system_metrics: float | None = None         # sample system metrics into each trial's run every N seconds
    max_retries: int = 0                        # restarts of a trial whose process died (budget.max_retries)
    trials_uri: str | None = None               # a remote store: the trials' folder URI (best.pt, samples.png)
    search_uri: str | None = None               # a remote store: the search's URI (tag lensearch.search_dir)
    data_local: str | None = None               # data in object storage: the driver's copy (dataset digest)

    def to_dict(self) -> dict[str, Any]:
        """The plain mapping (the keys are the field names)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SearchInfo:
        """From :meth:`to_dict`'s mapping, or the dict a tracker pickled before this class; keys it does not
        know are ignored, missing ones take their defaults."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        return cls(**{**values, "trials_dir": Path(values["trials_dir"])})


class MLflowTracker(Callback):
    """A Ray Tune callback that mirrors the search into MLflow; ``search_info``: :class:`SearchInfo`."""

    def __init__(self, tracking_uri: str, experiment: str, search_dir: Path, search_info: SearchInfo,
                 store: Path | None = None):
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.search_dir = Path(search_dir)
        self.info = search_info
        self.store = store
        self._client = None
        self._ready = False
        self._state = {"parent": None, "trials": {}, "finished": [], "logged": {}}
        self._monitors = {}  # trial id -> MLflow SystemMetricsMonitor (with search_info.system_metrics)

    def __getstate__(self):
        # Tune pickles callbacks with the experiment and, on Tuner.restore, uses the unpickled copy: it must
        # start from the state file, not from whatever this object held when it was pickled. The search info
        # goes in as a plain mapping, as it always did (SearchInfo).
        return {**self.__dict__, "_client": None, "_ready": False, "_monitors": {}, "info": self.info.to_dict()}

    def __setstate__(self, state):
        info = state.get("info")
        self.__dict__.update({**state, "info": SearchInfo.from_dict(info) if isinstance(info, dict) else info})

    def relocate(self, search_dir: Path) -> None:
        """Work in ``search_dir`` from now on: the copy Tune unpickles on ``--resume`` names the directory the
        search started in, which on another machine (a search in object storage, resumed from elsewhere) or
        after a move is not this run's."""
        self.search_dir = Path(search_dir)
        self.info = dataclasses.replace(self.info, trials_dir=self.search_dir / Path(self.info.trials_dir).name)

    def _start_monitor(self, trial_id: str, run_id: str, resumed: bool) -> None:
        """Sample system metrics (CPU, memory, GPU where MLflow sees one) into the trial's run, from this
        process (the driver's machine), every ``search_info.system_metrics`` seconds."""
        interval = self.info.system_metrics
        monitors = self.__dict__.setdefault("_monitors", {})
        if not interval or trial_id in monitors:
            return
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        monitor = SystemMetricsMonitor(run_id, sampling_interval=float(interval), resume_logging=resumed,
                                       tracking_uri=self.tracking_uri)
        monitor.start()
        monitors[trial_id] = monitor

    def _stop_monitor(self, trial_id: str) -> None:
        monitor = self.__dict__.setdefault("_monitors", {}).pop(trial_id, None)
        if monitor is not None:
            monitor.finish()

    def reload(self) -> None:
        """Re-read the run mapping written by whichever copy of this callback Tune used."""
        path = self.search_dir / STATE_FILE
        if path.exists():
            self._state = json.loads(path.read_text())

    # -- helpers ------------------------------------------------------------------------------------
    @property
    def client(self):
        if self._client is None:
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(tracking_uri=self.tracking_uri)
        return self._client

    def _save_state(self) -> None:
        path = self.search_dir / STATE_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._state, indent=1))
        os.replace(tmp, path)

    @property
    def parent_run_id(self) -> str:
        return self._state["parent"]

    @property
    def states(self) -> dict[str, str]:
        """The end state each closed trial was tagged with."""
        return dict(self._state.get("states", {}))

    @property
    def finished(self) -> set[str]:
        """Trials whose MLflow run was closed (completed, stopped early or errored)."""
        return set(self._state["finished"])

    def run_id(self, trial_id: str) -> str | None:
        return self._state["trials"].get(trial_id)

    def _ensure(self) -> None:
        """Load the state file and open (or reopen) the parent run, once per process."""
        if self._ready:
            return
        self.search_dir.mkdir(parents=True, exist_ok=True)
        self.reload()
        exp_id = get_experiment_id(self.client, self.experiment, self.store)
        if self._state["parent"] is None:
            where = self.info.search_uri or str(self.search_dir)  # a remote store: the search's URI
            tags = {"lensearch.kind": "search", "lensearch.search_dir": where,
                    **{f"version.{k}": v for k, v in versions().items()}, **self.info.tags}
            run = self.client.create_run(exp_id, run_name=self.info.name, tags=tags)
            self._state["parent"] = run.info.run_id
            log_params(self.client, run.info.run_id, self.info.params)
            for artifact in self.info.artifacts:
                self.client.log_artifact(run.info.run_id, str(artifact))
        else:
            self.client.update_run(self.parent_run_id, status="RUNNING")
            self.client.set_tag(self.parent_run_id, "lensearch.resumed", "true")
        self._save_state()
        self._ready = True

    # -- Tune callback hooks ------------------------------------------------------------------------
    def setup(self, **info):
        self._ensure()

    def on_trial_start(self, iteration, trials, trial, **info):
        self._ensure()
        run_id = self.run_id(trial.trial_id)
        if run_id is not None:           # restarted after a resume: keep logging into the same run
            self.client.update_run(run_id, status="RUNNING")
            self._start_monitor(trial.trial_id, run_id, resumed=True)
            return
        exp_id = get_experiment_id(self.client, self.experiment, self.store)
        tags = {"mlflow.parentRunId": self.parent_run_id, "lensearch.kind": "trial",
                "lensearch.trial_id": trial.trial_id, "lensearch.search": self.info.name}
        run = self.client.create_run(exp_id, run_name=f"{self.info.name}-{trial.trial_id}", tags=tags)
        self._state["trials"][trial.trial_id] = run.info.run_id
        self._save_state()
        log_params(self.client, run.info.run_id, trial.config)
        self._log_dataset(run.info.run_id)
        self._start_monitor(trial.trial_id, run.info.run_id, resumed=False)

    def _log_dataset(self, run_id: str) -> None:
        """Record the search's HDF5 file (digest computed once per search) as the run's train/val input."""
        data = self.info.params.get("data")
        local = self.info.data_local or data  # data in object storage: the driver's copy
        if not data or not Path(local).is_file():
            return
        if self._state.get("data_digest") is None:
            self._state["data_digest"] = quick_digest(Path(local))
            self._save_state()
        self.client.log_inputs(run_id, datasets=dataset_inputs(data, self._state["data_digest"]))

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self._ensure()
        run_id = self.run_id(trial.trial_id)
        if run_id is None:
            return
        from mlflow.entities import Metric

        step = int(result.get("epoch", result.get("training_iteration", 0)))
        logged = self._state.setdefault("logged", {})
        if step <= logged.get(trial.trial_id, 0):   # re-reported after a resume: already in MLflow
            return
        ts = int(result.get("timestamp", 0) * 1000)
        metrics = [Metric(k, v, ts, step) for k, v in _numeric(result).items()]
        if metrics:
            self.client.log_batch(run_id, metrics=metrics)
        logged[trial.trial_id] = step
        self._save_state()

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._ensure()
        source = (trial.config or {}).get(REFIT_OF)
        state = (end_state(trial.last_result or {}, self.info.max_epochs) if source is None
                 else refit_state(trial.last_result or {}, source))
        self.close_trial(trial.trial_id, "FINISHED", state)

    def on_trial_recover(self, iteration, trials, trial, **info):
        """A trial whose process died is restarted (``budget.max_retries``): its run says why, and stays open."""
        self._ensure()
        run_id = self.run_id(trial.trial_id)
        if run_id is not None and death_cause(trial_error_text(trial)) is not None:
            self.client.set_tag(run_id, f"retry.{trial.num_failures}",
                                retry_message(trial, self.info.max_retries,
                                              self.info.trials_uri or self.info.trials_dir)[:5000])

    def on_trial_error(self, iteration, trials, trial, **info):
        self._ensure()
        run_id = self.run_id(trial.trial_id)
        text = trial_error_text(trial)
        if run_id is not None and text and trial.trial_id not in self._state["finished"]:
            text = re.sub(r"\x1b\[[0-9;]*m", "", text)  # Ray colours its traceback for a terminal
            self.client.log_text(run_id, text, "error.txt")  # the full traceback; the terminal gets one line
        self.close_trial(trial.trial_id, "FAILED", f"errored: {trial_error_message(trial)}")

    def close_trial(self, trial_id: str, status: str, state: str) -> None:
        """Tag the trial's run with its end ``state``, log its sample grid and best checkpoint, and close it
        with ``status`` (once: a trial already closed is left alone)."""
        self._ensure()
        run_id = self.run_id(trial_id)
        self._stop_monitor(trial_id)
        if run_id is None or trial_id in self._state["finished"]:
            return
        self.client.set_tag(run_id, "state", state[:5000])
        self._state.setdefault("states", {})[trial_id] = state
        trial_dir = Path(self.info.trials_dir) / trial_id
        stored = None
        if self.info.trials_uri:  # a remote store: the trial wrote there, from whichever node ran it
            from lensearch.storage import download_tree, join

            stored = join(self.info.trials_uri, trial_id)
            download_tree(stored, trial_dir, only=("checkpoints/best.pt", "samples.png"))
        samples = trial_dir / "samples.png"
        if samples.exists():
            self.client.log_artifact(run_id, str(samples))
        best = best_checkpoint(trial_dir)
        if best.exists():
            self.client.set_tag(run_id, "checkpoint", join(stored, "checkpoints", "best.pt") if stored else str(best))
            if self.info.log_checkpoints:
                self.client.log_artifact(run_id, str(best), artifact_path="checkpoint")
        self.client.set_terminated(run_id, status=status)
        self._state["finished"].append(trial_id)
        self._save_state()

    def finish_search(self, summary: dict[str, Any], leaderboard_text: str, status: str = "FINISHED") -> None:
        """Log the outcome on the parent run and close it (status KILLED for an interrupted search)."""
        self.reload()
        for trial_id in list(self.__dict__.get("_monitors", {})):
            self._stop_monitor(trial_id)
        run_id = self.parent_run_id
        if run_id is None:
            return
        for key, value in summary.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                self.client.log_metric(run_id, key, float(value))
            elif value is not None:
                self.client.set_tag(run_id, f"summary.{key}", str(value)[:5000])
        self.client.log_text(run_id, leaderboard_text, "leaderboard.txt")
        self.client.set_terminated(run_id, status=status)


def end_state(last_result: dict[str, Any], max_epochs: int) -> str:
    """How a trial that ended without error ended (from its last result), as logged and shown everywhere."""
    epoch = int(last_result.get("epoch", 0))
    if epoch >= max_epochs:
        return "completed"
    if last_result.get("time_limit_reached"):
        return f"hit its time limit at epoch {epoch}"
    return f"stopped early at epoch {epoch}"


CUT_BY_TIME_BUDGET = "cut by time budget at epoch {epoch}"
# states of trials that used their whole budget (epochs, or their own time limit): comparable on a front
FULL_BUDGET_STATES = ("completed", "hit its time limit")


def error_summary(err: BaseException) -> str:
    """``"Type: message"`` of the innermost error of our own code that ``err`` wraps, on one line.

    Ray wraps a trial's exception in a ``RayTaskError`` (whose ``cause`` is the original) and prints ~85 lines
    of traceback; the type and message of the original are what a user needs (``NonFiniteLoss: non-finite
    loss (nan) at epoch 2, ...``). Chains are followed (``.cause``, then ``raise ... from``) down to the last
    exception that is not one of Ray's own.
    """
    seen = set()
    while id(err) not in seen:
        seen.add(id(err))
        inner = getattr(err, "cause", None)
        if not isinstance(inner, BaseException):
            inner = err.__cause__
        if inner is None or (_from_ray(inner) and not _from_ray(err)):
            break
        err = inner
    if _from_ray(err) and str(err).strip():  # Ray's text is a whole traceback: its innermost useful line
        return _short_type(error_line(str(err)))
    message = " ".join(str(err).split())
    return f"{type(err).__name__}: {message}"[:500] if message else type(err).__name__


def _short_type(line: str) -> str:
    """``pkg.mod.Type: message`` -> ``Type: message`` (a traceback's last line names the type in full)."""
    return re.sub(r"^(?:\w+\.)+(?=\w+: )", "", line)


def _from_ray(err: BaseException) -> bool:
    return type(err).__module__.split(".")[0] == "ray"


def trial_error_message(trial) -> str:
    """The useful line of a trial's error, for a one-line state (see :func:`error_summary`)."""
    try:
        err = trial.get_pickled_error()
        if err is not None:
            return error_summary(err)
    except Exception:  # an error that does not unpickle here: fall back to its text
        pass
    return _short_type(error_line(trial_error_text(trial)))


def trial_error_text(trial) -> str:
    """The full text (traceback) Tune kept of a trial's error, or ``""``."""
    text = ""
    try:
        err = trial.get_error()
        text = str(err) if err is not None else ""
    except Exception:
        pass
    if not text and getattr(trial, "error_file", None) and Path(trial.error_file).exists():
        text = Path(trial.error_file).read_text()
    return text


# what a trial's error text says when its process (or a worker's, or its node) died rather than raised
_DEATHS = (("SIGKILL", "SIGKILL"), ("killed by SIGKILL", "SIGKILL"), ("SIGTERM", "SIGTERM"),
           ("out of memory", "out of memory"), ("OutOfMemoryError", "out of memory"),
           ("NodeDiedError", "node lost"), ("node died", "node lost"))
_DEATH_MARKS = ("ActorDiedError", "RayActorError", "WorkerCrashedError", "actor died", "worker process has died",
                "died unexpectedly", "Connection reset by peer", "Connection closed by peer", "NodeDiedError",
                "ActorUnavailableError", "exits unexpectedly")


_NAMED_DEATH = re.compile(r"\bworkers? \d+(?:, \d+)* died(?: \([^)\n]*\))?")  # runner.WorkerDied's words


def death_cause(text: str) -> str | None:
    """``"worker 1 died (SIGKILL or out of memory)"``-like words when ``text`` (a trial's error) says a process
    died, else None. A multi-worker trial names the dead worker's rank (:class:`~lensearch.training.runner.WorkerDied`);
    a single-worker trial's own process dying is ``worker died (...)``."""
    named = _NAMED_DEATH.search(text)
    if named:
        return named.group(0)
    if not any(mark in text for mark in _DEATH_MARKS):
        return None
    if "exit code 2" in text or "connection error code 2" in text:  # what Ray says for a SIGKILLed worker
        how = "SIGKILL or out of memory"
    else:
        how = next((name for mark, name in _DEATHS if mark in text), None)
    return "worker died" + (f" ({how})" if how else "")


def retry_message(trial, max_retries: int, trials: str | os.PathLike | None = None) -> str:
    """One line for a trial Tune is about to restart, naming the cause, e.g.
    ``worker 1 died (SIGKILL or out of memory) at epoch 2; retry 1/2 from checkpoint``. ``trials``: the search's
    trials folder (a path or URI), where the trial's ``last.pt`` is looked for when no report named it (a
    multi-worker trial's last reports can be lost with the worker)."""
    text = trial_error_text(trial)
    last = trial.last_result or {}
    epoch = int(last.get("epoch", 0) or 0) + 1  # it died in the epoch after its last report
    ckpt = last.get("checkpoint_dir")
    if not ckpt and trials:
        ckpt = join(str(trials), trial.trial_id, "checkpoints")
    from lensearch.storage import exists, is_uri

    stored = ckpt and (exists(join(ckpt, "last.pt")) if is_uri(ckpt) else (Path(ckpt) / "last.pt").exists())
    whence = "from checkpoint" if stored else "from the start"
    cause = death_cause(text) or f"failed ({error_line(text)})"
    return f"{cause} at epoch {epoch}; retry {trial.num_failures}/{max_retries} {whence}"
