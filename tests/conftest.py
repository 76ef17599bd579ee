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


@pytest.fixture(scope="session")
def report_search(ray_cluster, tiny_h5, tmp_path_factory):
    """One search shared by test_report and test_ui_browser: smoke.yaml on the tiny data, cut to 3
    single-worker trials x <= 3 reports of 10 steps, ASHA after the first report; warm-started with one SPAN
    and one ESPCN point so two architectures are always there."""
    import yaml

    from lensearch.search.schema import load_search
    from lensearch.search.tuner import SearchOptions, run_search

    root = tmp_path_factory.mktemp("report_search")
    doc = yaml.safe_load((Path(__file__).resolve().parents[1] / "search_spaces" / "smoke.yaml").read_text())
    span = doc["searcher"]["initial_points"][0]
    espcn = {**{k: v for k, v in span.items() if not k.startswith("model")}, "model": "espcn",
             "model.espcn.num_features": 16, "model.espcn.num_layers": 4, "normalization": "none"}
    doc["space"]["model"]["choice"] = {k: v for k, v in doc["space"]["model"]["choice"].items()
                                       if k in ("span", "espcn")}
    doc["space"]["train"]["steps_per_epoch"] = 10
    doc.update(name="rep", data={"path": str(tiny_h5)}, resources={"workers": 1},
               budget={"num_samples": 3, "max_epochs": 3},
               early_stopping={"name": "asha", "grace_period": 1, "reduction_factor": 2},
               searcher={**doc["searcher"], "startup_trials": 2, "initial_points": [span, espcn]})
    path = root / "rep.yaml"
    path.write_text(yaml.safe_dump(doc))
    outcome = run_search(load_search(path), SearchOptions(store=root / "mlruns", root=root, quiet=True))
    assert len(outcome.rows) == 3 and not any(r.state.startswith("errored") for r in outcome.rows)
    return outcome
