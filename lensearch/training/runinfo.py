"""What one training run needs besides its run configuration: :class:`RunInfo`.

The run configuration (:mod:`lensearch.training.config`) says *what* to train; the run info says *where and on
what*: the data file and what was computed from it once on the driver (:func:`lensearch.training.runner.prepare_data`),
the run's folder, and what the search adds for its trials (the bicubic reference, the frozen classifier, the
latency cache, a remote store). A search builds one for all its trials (``TrialSetup.run`` in
:mod:`lensearch.search.tuner`), each trial fills in its ``dir`` (and ``remote_dir``), and it travels pickled into
the Ray Train workers (:func:`lensearch.training.loop.train_worker`). It is frozen: a step that changes it
(:func:`lensearch.training.remote.localize_run`, the trial's thread count) makes a new one with :meth:`RunInfo.replace`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RunInfo:
    """The run info of one training run (see the module docstring)."""

    data_path: str                          # the HDF5 file (absolute; with ``data_uri``, this node's copy)
    scale: int                              # the file's upscaling factor
    in_channels: int = 1                    # image channels of the file
    has_clean: bool = False                 # the file holds noise-free HR (``*_clean`` metrics)
    stats: dict[str, Any] | None = None     # train-split statistics for the normalization (``train_stats``)
    data_uri: str | None = None             # the data file's URI when it lives in object storage
    dir: str | None = None                  # the run's folder (checkpoints, sample grid); absolute, set per run
    remote_dir: str | None = None           # the run folder's URI with a remote store (``training/remote.py``)
    storage_env: dict[str, str] | None = None  # the object store's settings as the driver knew them
    reference: dict[str, float] | None = None  # bicubic and noise ceiling on the scored val images (a search)
    downstream: dict[str, Any] | None = None   # the frozen classifier's entry (``path``, ...) for val_downstream_auc
    measure_latency: bool = False           # report ``latency_ms`` too
    latency_cache: str | None = None        # JSON file of latencies shared by a search's trials
    threads: int | None = None              # intra-op threads of each worker
    kill_at_epoch: int | None = None        # test-only fault injection (``training.loop._fault_point``)
    grid_epochs: list[int] | None = None    # where a search may stop the run: the sample grid is drawn there

    def replace(self, **changes: Any) -> RunInfo:
        """A copy with ``changes`` (:func:`dataclasses.replace`)."""
        return dataclasses.replace(self, **changes)

    @property
    def data_name(self) -> str:
        """The data file as the user named it: its URI when it is in object storage, else its path."""
        return self.data_uri or self.data_path
