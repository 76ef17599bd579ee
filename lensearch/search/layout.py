"""Where a search lives on disk, and the files that let ``--resume`` continue it from anywhere.

One search is ``<store>/searches/<name>-<timestamp>/``: ``search.yaml`` (the file as run; ``run.yaml`` for
``lensearch train``), ``budget.json`` (the budget it started with), ``origin.json`` (its name, store, tracking
URI and data file, which ``--resume`` reuses from any working directory), ``optuna.journal`` (the Optuna
study), ``mlflow_runs.json`` (trial -> MLflow run, :mod:`lensearch.search.tracking`), ``latency.json`` (latency
per architecture), ``trials/<trial_id>/{checkpoints/{best,last}.pt, samples.png}`` and ``tune/`` (Ray Tune's
experiment state, which Tune re-uploads wholesale, so nothing of ours lives there).

Readers of a search directory (``export``, ``report``) take these names from here.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from lensearch.errors import UserError, expect

if TYPE_CHECKING:
    from lensearch.search.schema import SearchFile

SEARCHES = "searches"   # under the store: one directory per search
TRIALS = "trials"
TUNE = "tune"
SEARCH_FILE = "search.yaml"  # the search file as run
RUN_FILE = "run.yaml"        # the resolved run configuration of `lensearch train`
BUDGET = "budget.json"  # the budget a search started with (CLI overrides applied), reused by --resume
OPTUNA_JOURNAL = "optuna.journal"  # the search's Optuna study (JournalStorage file), kept across --resume
ORIGIN = "origin.json"  # the search's name, store, tracking URI and data file, reused by --resume
LATENCY_CACHE = "latency.json"  # latency per architecture, measured once per search
STAMPED = re.compile(r"-\d{8}-\d{6}(-\d+)?$")  # <name>-<YYYYmmdd-HHMMSS>[-n]


def search_name(directory: str | os.PathLike) -> str:
    """The search name a directory's own name carries (``<name>-<timestamp>`` without the stamp)."""
    return STAMPED.sub("", Path(directory).name)


def best_checkpoint(trial_dir: str | os.PathLike) -> Path:
    """A trial's ``checkpoints/best.pt``."""
    return Path(trial_dir) / "checkpoints" / "best.pt"


def absolute(path: str | os.PathLike, root: Path) -> Path:
    """``path``, made absolute against ``root`` when relative."""
    path = Path(path)
    return path if path.is_absolute() else (root / path).resolve()


def resolve_search_dir(search: SearchFile, searches: Path, resume: bool | str) -> tuple[Path, bool]:
    """The search's directory under ``searches`` and whether it is resumed (a new one gets a new time-stamped
    directory; while one of its name runs, :func:`hold_search_name` refuses a second)."""
    name = search.name
    if isinstance(resume, str):
        path = Path(resume).resolve()
        expect(path.is_dir(), f"--resume {resume}: no such search directory")
        return path, True
    pattern = re.compile(re.escape(name) + STAMPED.pattern)  # not "smoke-big-..." for "smoke"
    candidates = sorted(p for p in searches.glob(f"{name}-*") if p.is_dir() and pattern.match(p.name))
    if resume:
        expect(candidates, f"--resume: no earlier search named '{name}' under {searches}")
        return candidates[-1], True
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = searches / f"{name}-{stamp}"
    n = 1
    while path.exists():
        n += 1
        path = searches / f"{name}-{stamp}-{n}"
    return path, False


def hold_search_name(searches: Path, search: SearchFile, resuming: bool) -> IO[str]:
    """Claim ``search.name`` in this store for as long as this process runs it (an exclusive ``flock`` on
    ``searches/.<name>.lock``, released on exit even after ``kill -9``): a second search of the same name started
    meanwhile, resumed or not, is refused in one line instead of writing beside the first one. Returns the open
    lock file (close it to release)."""
    import fcntl

    name = search.name
    searches.mkdir(parents=True, exist_ok=True)
    lock = open(searches / f".{name}.lock", "a+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        pid = lock.read().strip() or "?"
        lock.close()
        what = "resume it" if resuming else "start another one of that name (the file's name: key)"
        raise UserError(f"{search.path}: a search named '{name}' is running in another process (pid {pid}) "
                        f"in the store {searches.parent}; wait until it ends to {what}") from None
    lock.truncate(0)
    lock.write(str(os.getpid()))
    lock.flush()
    return lock


def write_origin(search_dir: Path, name: str, store: Path | str, tracking_uri: str, data_path: str) -> None:
    """Record where the search in ``search_dir`` logs and what it trains on (``origin.json``)."""
    (search_dir / ORIGIN).write_text(json.dumps({"name": name, "store": str(store), "tracking_uri": tracking_uri,
                                                 "data_path": data_path}, indent=1))


def resumed_origin(search_dir: Path, store: str | os.PathLike | None, tracking_uri: str | None,
                   root: Path) -> dict[str, Any]:
    """Where a resumed search logs (its ``origin.json``); an explicit ``store`` (relative to ``root``) or
    ``tracking_uri`` that disagrees is a one-line error rather than a second, empty MLflow database that knows
    none of the search's runs."""
    path = search_dir / ORIGIN
    if not path.exists():  # a search from before origin.json: its store is the folder holding searches/
        return {"store": str(search_dir.parent.parent)} if search_dir.parent.name == SEARCHES else {}
    origin = json.loads(path.read_text())
    from lensearch.storage import is_uri

    given = None if store is None else (str(store).rstrip("/") if is_uri(str(store)) else str(absolute(store, root)))
    if given is not None and given != str(origin["store"]).rstrip("/"):
        raise UserError(f"--store {store}: the search in {search_dir} belongs to the store {origin['store']}; "
                        f"leave --store out to continue it there")
    if tracking_uri and tracking_uri != origin["tracking_uri"]:
        raise UserError(f"--tracking-uri {tracking_uri}: the search in {search_dir} logs to "
                        f"{origin['tracking_uri']}; leave --tracking-uri out to continue it there")
    return origin


def resume_command(search_dir: Path, address: str | None = None, search_uri: str | None = None) -> str:
    """The command line that continues the search in ``search_dir`` from any working directory: its own copy of
    the search file and its directory (which records the store, tracking URI and data file); with a remote
    store, the search's URI and the copy of the search file stored there (``search_dir`` is then the driver's
    working copy, which another machine does not have)."""
    from lensearch.storage import join

    search_dir = Path(search_dir).resolve()
    file = join(search_uri, SEARCH_FILE) if search_uri else str(search_dir / SEARCH_FILE)
    words = ["lensearch", "tune", file, "--resume", search_uri or str(search_dir)]
    if address:
        words += ["--address", address]
    return " ".join(shlex.quote(w) for w in words)
