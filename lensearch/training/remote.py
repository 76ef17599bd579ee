"""A training run whose home is a storage URI (a search whose ``--store`` is ``s3://...``) or whose data file is.

A run's :class:`~lensearch.training.runinfo.RunInfo` may carry:

- ``remote_dir``: the URI of the run's folder (``<store>/searches/<search>/trials/<trial_id>``). Each process
  of the run then works in a node-local scratch folder (:func:`scratch_dir`, ``run.dir``), starts by
  downloading what the folder already holds (a retried trial continues from ``last.pt`` on whichever node it
  lands), and uploads ``last.pt``, ``best.pt`` and ``samples.png`` after each save (:func:`publish`), before
  the epoch is reported.
- ``data_uri``: the data file's URI; each node downloads it once (:func:`lensearch.storage.fetch`) and the run
  reads the local copy (``run.data_path``).
- ``storage_env``: the object store's endpoint and region as the driver knew them
  (:func:`lensearch.storage.carried_env`), for nodes that have no setting of their own.

Without these fields every function here leaves the run as it is (plain or shared-filesystem paths).
"""

from __future__ import annotations

import os
from pathlib import Path
from lensearch import storage
from lensearch.training.runinfo import RunInfo

CHECKPOINTS = "checkpoints"


def is_remote(run: RunInfo) -> bool:
    return bool(run.remote_dir)


def scratch_dir(remote_dir: str) -> Path:
    """This node's working folder for the run stored at ``remote_dir`` (one per Ray node, so two nodes sharing
    one machine — a test cluster — still behave like two machines)."""
    node = "local"
    try:
        import ray

        if ray.is_initialized():
            node = ray.get_runtime_context().get_node_id()[:12]
    except Exception:
        pass
    return storage.cache_root() / "runs" / node / storage.slug(remote_dir)


def localize_run(run: RunInfo) -> RunInfo:
    """``run`` with node-local paths: the data file fetched, the run folder in this node's scratch space with
    the stored folder's files downloaded into it (a retried trial finds its ``last.pt``)."""
    if not run.remote_dir and not run.data_uri:
        return run
    storage.apply_env(run.storage_env)
    if run.data_uri:
        run = run.replace(data_path=str(storage.fetch(run.data_uri, "data")))
    if run.remote_dir:
        local = scratch_dir(run.remote_dir)
        local.mkdir(parents=True, exist_ok=True)
        storage.download_tree(run.remote_dir, local)  # what an earlier attempt stored (on any node)
        run = run.replace(dir=str(local))
        if run.latency_cache:  # the driver's path does not exist here: a per-node cache of latencies
            run = run.replace(latency_cache=str(local.parent / "latency.json"))
    return run


def publish(run: RunInfo, *names: str) -> None:
    """Upload the files ``names`` (relative to the run folder) that exist to the run's stored folder."""
    if not run.remote_dir:
        return
    local = Path(run.dir)
    for rel in names:
        if (local / rel).is_file():
            storage.upload(local / rel, storage.join(run.remote_dir, rel))


def publish_checkpoint(run: RunInfo, improved: bool, sample_grid: str | None) -> None:
    """After a save: ``last.pt`` always, ``best.pt`` when the epoch improved, the sample grid when it was drawn."""
    if not run.remote_dir:
        return
    names = [f"{CHECKPOINTS}/last.pt"]
    if improved:
        names.append(f"{CHECKPOINTS}/best.pt")
    if sample_grid:
        names.append(sample_grid)
    publish(run, *names)


def stored_dir(run: RunInfo, ckpt_dir: Path) -> str:
    """The checkpoint folder as reported (``checkpoint_dir``): its URI for a stored run, else the local path."""
    return storage.join(run.remote_dir, CHECKPOINTS) if run.remote_dir else str(ckpt_dir)


def pull(run: RunInfo, *names: str) -> None:
    """Download the files ``names`` of the run's stored folder that exist into the run folder."""
    if not run.remote_dir:
        return
    storage.apply_env(run.storage_env)
    for rel in names:
        storage.download(storage.join(run.remote_dir, rel), Path(run.dir) / rel)


def checkpoint_location(location: str | os.PathLike) -> Path:
    """A checkpoint named by a path or URI (``train.init_from`` of a refit on a remote store), as a local file."""
    return storage.local_copy(str(location) if storage.is_uri(str(location)) else location)
