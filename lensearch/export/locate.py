"""Locating a search on disk: a directory, a search name under ``<store>/searches`` or an MLflow parent run id.

Reads what a search leaves in its directory (``search.yaml``, ``budget.json``, ``mlflow_runs.json``); the names
of those files and of search directories come from :mod:`lensearch.search.layout` and
:mod:`lensearch.search.tracking` (imported lazily, inside the functions).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from lensearch.errors import UserError, expect

__all__ = ["SearchRef", "find_search"]

_RUN_ID = re.compile(r"[0-9a-f]{32}")


@dataclass
class SearchRef:
    """One search on disk: its directory, objectives and MLflow runs."""

    name: str
    dir: Path
    objectives: list[tuple[str, str]]
    tracking_uri: str
    parent_run_id: str | None = None
    run_ids: dict[str, str] = field(default_factory=dict)
    logged: dict[str, int] = field(default_factory=dict)  # trial -> last epoch it reported
    max_epochs: int | None = None                        # the search's budget (budget.json)
    uri: str | None = None                               # where it is stored, when in object storage (dir: a copy)

    def stored(self, path: str | os.PathLike) -> str:
        """``path`` (inside ``dir``) as the user knows it: the stored object's URI for a search in object storage."""
        if self.uri is None:
            return str(path)
        return f"{self.uri}/{Path(path).resolve().relative_to(self.dir.resolve()).as_posix()}"


def _search_ref(path: Path, store: Path, tracking_uri: str | None) -> SearchRef:
    from lensearch.search.layout import BUDGET, SEARCH_FILE, SEARCHES, TRIALS, search_name
    from lensearch.search.schema import load_search
    from lensearch.search.tracking import STATE_FILE, default_tracking_uri

    path = path.resolve()
    expect(any((path / p).exists() for p in (SEARCH_FILE, TRIALS, STATE_FILE)),
           f"{path}: not a search directory (no {SEARCH_FILE}, {TRIALS}/ or {STATE_FILE})")
    name, objectives = search_name(path), [("val_psnr", "max")]
    if (path / SEARCH_FILE).exists():
        search = load_search(path / SEARCH_FILE)
        name, objectives = search.name, [(o.metric, o.mode) for o in search.objectives]
    try:
        runs = json.loads((path / STATE_FILE).read_text()) if (path / STATE_FILE).exists() else {}
    except (ValueError, UnicodeDecodeError) as err:
        raise UserError(f"{path / STATE_FILE}: garbled ({err})") from None
    if path.parent.name == SEARCHES:  # <store>/searches/<dir>: the store it was logged to
        store = path.parent.parent
    max_epochs = None
    try:
        max_epochs = int(json.loads((path / BUDGET).read_text())["max_epochs"])
    except (OSError, ValueError, KeyError, TypeError):
        pass  # no budget record (older search): trials' end states stay unknown
    return SearchRef(name, path, objectives, tracking_uri or default_tracking_uri(store),
                     runs.get("parent"), runs.get("trials", {}), runs.get("logged", {}), max_epochs)


def find_search(search: str, store: str | os.PathLike = "mlruns", tracking_uri: str | None = None) -> SearchRef:
    """``search``: a search directory, a search name (its latest ``<store>/searches/<name>-*``) or an MLflow
    parent run id; :class:`UserError` when it is none of them. A search in object storage (``search`` or
    ``store`` a URI) is read from a local copy (:func:`lensearch.search.remote.fetch_search`)."""
    from lensearch.search.layout import SEARCHES, search_name
    from lensearch.storage import is_uri

    if is_uri(str(search)) or (is_uri(str(store)) and not _RUN_ID.fullmatch(str(search))):
        from lensearch.search.remote import fetch_search

        return _stored_search_ref(*fetch_search(str(search), str(store)), tracking_uri)
    if is_uri(str(store)):  # an MLflow run id: the server knows where its search is stored
        expect(tracking_uri, f"--store {store}: give --tracking-uri to find the search of MLflow run {search}")
        return _stored_search_ref(*_search_dir_of_run(search, Path.cwd(), tracking_uri), tracking_uri)
    store = Path(store).resolve()
    if Path(search).is_dir():
        return _search_ref(Path(search), store, tracking_uri)
    dirs = sorted(p for p in (store / SEARCHES).glob(f"{search}-*") if p.is_dir() and search_name(p) == search)
    if dirs:
        return _search_ref(dirs[-1], store, tracking_uri)
    if _RUN_ID.fullmatch(search):
        path, uri = _search_dir_of_run(search, store, tracking_uri)
        if uri is not None:
            from lensearch.search.tracking import default_tracking_uri

            return _stored_search_ref(path, uri, tracking_uri or default_tracking_uri(store))
        return _search_ref(path, store, tracking_uri)
    known = sorted({search_name(p) for p in (store / SEARCHES).glob("*-*")})
    raise UserError(f"unknown search {search!r}: not a directory, not a search name under {store / SEARCHES} "
                    f"(known: {', '.join(known) or 'none'}), not an MLflow run id")


def _stored_search_ref(local: Path, uri: str | None, tracking_uri: str | None) -> SearchRef:
    """The :class:`SearchRef` of a local copy of a stored search: its MLflow server is the one it logged to
    (``origin.json``) unless ``tracking_uri`` says otherwise."""
    from lensearch.search.layout import ORIGIN

    try:
        origin = json.loads((local / ORIGIN).read_text())
    except (OSError, ValueError):
        origin = {}
    tracking = tracking_uri or origin.get("tracking_uri")
    expect(tracking, f"{local.name}: the stored search records no MLflow tracking URI; give --tracking-uri")
    ref = _search_ref(local, local.parent.parent, tracking)
    ref.uri = uri
    return ref


def _search_dir_of_run(run_id: str, store: Path, tracking_uri: str | None) -> tuple[Path, str | None]:
    """The search directory of an MLflow parent run, and its URI when it is stored in object storage (the
    path is then a local copy)."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from lensearch.search.tracking import default_tracking_uri

    uri = tracking_uri or default_tracking_uri(store)
    try:
        tags = MlflowClient(uri).get_run(run_id).data.tags
    except MlflowException:
        raise UserError(f"unknown search {run_id!r}: no such MLflow run at {uri}") from None
    expect(tags.get("lensearch.kind") == "search" and tags.get("lensearch.search_dir"),
           f"MLflow run {run_id} is not the parent run of a lensearch search (kind "
           f"{tags.get('lensearch.kind')!r}); give the search's parent run id")
    from lensearch.storage import is_uri

    if is_uri(tags["lensearch.search_dir"]):  # stored in object storage: a local copy
        from lensearch.search.remote import fetch_search

        return fetch_search(tags["lensearch.search_dir"])
    path = Path(tags["lensearch.search_dir"])
    expect(path.is_dir(), f"MLflow run {run_id}: its search directory {path} no longer exists")
    return path, None
