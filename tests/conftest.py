"""Shared fixtures: one tiny simulated dataset and one Ray cluster per test session.

Never run this suite with pytest-xdist: every worker process would start its own Ray instance.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")


@pytest.fixture(scope="session")
def tiny_h5(tmp_path_factory) -> Path:
    """128 simulated 'tiny' lensing pairs (32 -> 64 px), noisy HR plus hr_clean, 80/10/10 split."""
    from lensearch.data.simulate import simulate_to_h5

    path = tmp_path_factory.mktemp("data") / "tiny.h5"
    simulate_to_h5(path, "tiny", 128, 0, workers=1, progress=False)
    return path


@pytest.fixture(scope="session")
def ray_cluster():
    """The one Ray instance of the session (2 CPUs, dashboard on for the state API); shut down at the end."""
    import fcntl
    import tempfile

    from lensearch.training.cluster import connect

    # One local Ray instance per machine: a second test session on the same machine (another
    # checkout, say) waits here for the first to end instead of failing to start its own.
    with open(Path(tempfile.gettempdir()) / "lensearch-test-ray.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        handle = connect(num_cpus=2)
        yield handle
        handle.close()
