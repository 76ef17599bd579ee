"""A search whose store is a storage URI (``--store s3://bucket/prefix``): the driver's working copy and its mirror.

The layout in the store is the one of a local store (``<store>/searches/<name>-<stamp>/...``, see
:mod:`lensearch.search.tuner`); what differs is who writes where:

- **the driver** keeps a working copy of the search directory under the cache
  (``<cache>/stores/<store slug>/searches/<name>-<stamp>/``) for its own files (``search.yaml``,
  ``budget.json``, ``origin.json``, ``mlflow_runs.json``, ``optuna.journal``) and uploads them to the store
  when they are first written, after each trial ends (:class:`StoreMirror`) and at the end
  (:meth:`RemoteStore.push`);
- **Ray Tune** keeps its experiment state in ``<search>/tune/`` in the store itself (``storage_path`` is the URI);
- **each trial** works in a node-local folder and uploads ``checkpoints/{last,best}.pt`` and ``samples.png`` to
  ``<search>/trials/<trial_id>/`` after each save (:mod:`lensearch.training.remote`); the driver downloads a
  trial's ``best.pt`` and sample grid into its working copy when the trial ends (for MLflow and the leaderboard).

Resuming (``--resume`` with the same ``--store``, or ``--resume s3://.../searches/<dir>``) downloads the
driver's files into a fresh working copy and restores Tune from the store. ``lensearch export`` downloads the
search's files and every trial's ``best.pt`` (:func:`fetch_search`).

A search's name is held (one running search per name) by a lock file in the working copy: on this machine only,
unlike a shared-filesystem store where every machine sees the lock.
"""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

from ray.tune import Callback

from lensearch import storage
from lensearch.errors import UserError, expect

SEARCHES, TRIALS, TUNE, REFIT = "searches", "trials", "tune", "refit"  # as in lensearch.search.tuner
DRIVER_ONLY = (TRIALS, TUNE, REFIT)  # what the driver's mirror never uploads (written by trials or by Tune)
_STAMPED = r"-\d{8}-\d{6}(-\d+)?$"


class RemoteStore:
    """The store ``uri`` seen from this machine: ``uri`` and the local working area ``local``."""

    def __init__(self, uri: str):
        self.uri = uri.rstrip("/")
        self.local = storage.cache_root() / "stores" / storage.slug(self.uri)

    def __repr__(self) -> str:
        return f"RemoteStore({self.uri!r})"

    def search_uri(self, search_dir: Path) -> str:
        return storage.join(self.uri, SEARCHES, Path(search_dir).name)

    def trials_uri(self, search_dir: Path) -> str:
        return storage.join(self.search_uri(search_dir), TRIALS)

    def search_names(self) -> list[str]:
        return storage.list_names(storage.join(self.uri, SEARCHES))

    def resolve_search_dir(self, name: str, resume: bool | str) -> tuple[Path, bool]:
        """The working copy of the search to run and whether it is resumed (see ``tuner._resolve_search_dir``):
        a new ``<name>-<stamp>`` that the store does not hold yet, or the one to resume, downloaded."""
        searches = self.local / SEARCHES
        pattern = re.compile(re.escape(name) + _STAMPED)
        if isinstance(resume, str):
            dir_name = storage.name(resume)
            expect(storage.exists(storage.join(self.uri, SEARCHES, dir_name, "search.yaml"))
                   or storage.exists(storage.join(self.uri, SEARCHES, dir_name, "run.yaml")),
                   f"--resume {resume}: no search directory in the store {self.uri}")
            return self.pull(searches / dir_name), True
        names = self.search_names()
        if resume:
            candidates = sorted(n for n in names if pattern.fullmatch(n))
            expect(candidates, f"--resume: no earlier search named '{name}' under {storage.join(self.uri, SEARCHES)}")
            return self.pull(searches / candidates[-1]), True
        stamp = time.strftime("%Y%m%d-%H%M%S")
        dir_name, n = f"{name}-{stamp}", 1
        while dir_name in names or (searches / dir_name).exists():
            n += 1
            dir_name = f"{name}-{stamp}-{n}"
        return searches / dir_name, False

    def pull(self, search_dir: Path) -> Path:
        """A fresh working copy of the stored search ``search_dir.name`` (the driver's files, not the trials)."""
        shutil.rmtree(search_dir, ignore_errors=True)
        search_dir.mkdir(parents=True)
        storage.download_tree(self.search_uri(search_dir), search_dir, skip=DRIVER_ONLY)
        return search_dir

    def push(self, search_dir: Path) -> None:
        """Upload the driver's files of the working copy ``search_dir`` to the store."""
        storage.upload_tree(search_dir, self.search_uri(search_dir), skip=DRIVER_ONLY)

    def pull_trials(self, search_dir: Path) -> None:
        pull_trials(self.search_uri(search_dir), search_dir)


def pull_trials(search_uri: str, search_dir: Path) -> None:
    """Download the trials' ``best.pt`` and sample grids that the working copy ``search_dir`` lacks."""
    trials = storage.join(search_uri, TRIALS)
    for trial_id in storage.list_names(trials):
        storage.download_tree(storage.join(trials, trial_id), Path(search_dir) / TRIALS / trial_id,
                              only=("checkpoints/best.pt", "samples.png"), missing_only=True)


def store_of(location: str | None, resume: bool | str) -> RemoteStore | None:
    """The remote store of a run: ``--store URI``, or the store of ``--resume <store>/searches/<dir>``."""
    if isinstance(resume, str) and storage.is_uri(resume):
        store = storage.parent(storage.parent(resume))
        expect(storage.name(storage.parent(resume)) == SEARCHES,
               f"--resume {resume}: expected <store>/searches/<name>-<stamp>")
        if location is not None:
            expect(str(location).rstrip("/") == store, f"--store {location}: the search {resume} belongs to the "
                                                       f"store {store}; leave --store out to continue it there")
        return RemoteStore(store)
    if location is not None and storage.is_uri(str(location)):
        expect(not resume or not isinstance(resume, str), f"--resume {resume}: with --store {location}, give the "
                                                          f"search's URI (<store>/searches/<dir>) or no directory")
        return RemoteStore(str(location))
    return None


class StoreMirror(Callback):
    """Uploads the driver's files of the search to the store after each trial ends and when the run ends."""

    def __init__(self, store: RemoteStore, search_dir: Path):
        self.store, self.search_dir = store, Path(search_dir)

    def relocate(self, search_dir: Path) -> None:
        """Mirror the working copy ``search_dir`` (this run's, on ``--resume`` from another machine)."""
        self.search_dir = Path(search_dir)

    def _push(self) -> None:
        try:
            self.store.push(self.search_dir)
        except Exception as err:  # a failed upload must not kill the search: the next one (or the last) retries
            import sys

            print(f"lensearch: could not mirror {self.search_dir.name} to {self.store.uri}: {err}", file=sys.stderr)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._push()

    def on_trial_error(self, iteration, trials, trial, **info):
        self._push()

    def on_experiment_end(self, trials, **info):
        self._push()


def fetch_search(location: str, store: str | None = None) -> tuple[Path, str]:
    """A local copy of a stored search for reading (``lensearch export``): ``location`` is the search's URI
    (``<store>/searches/<name>-<stamp>``) or, with ``store`` a URI, a search name (its latest run) or directory
    name. Downloads the driver's files and every trial's ``best.pt`` (and sample grid); returns the local copy
    and the search's URI."""
    if storage.is_uri(location):
        remote = RemoteStore(storage.parent(storage.parent(location)))
        dir_name = storage.name(location)
    else:
        expect(store is not None and storage.is_uri(str(store)), f"{location}: not a storage URI")
        remote = RemoteStore(str(store))
        names = remote.search_names()
        if location in names:
            dir_name = location
        else:
            pattern = re.compile(re.escape(location) + _STAMPED)
            matches = sorted(n for n in names if pattern.fullmatch(n))
            if not matches:
                known = sorted({re.sub(_STAMPED, "", n) for n in names if not n.startswith(".")})
                raise UserError(f"unknown search {location!r}: not a search name under "
                                f"{storage.join(remote.uri, SEARCHES)} (known: {', '.join(known) or 'none'})")
            dir_name = matches[-1]
    uri = storage.join(remote.uri, SEARCHES, dir_name)
    expect(storage.exists(uri), f"{uri}: no such search in the store")
    local = remote.pull(remote.local / "read" / SEARCHES / dir_name)
    remote.pull_trials(local)
    return local, uri
