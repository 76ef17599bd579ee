"""Concurrency and faults, for real: two `lensearch tune` processes sharing this machine's Ray instance, a
second search of one name refused while the first runs, and a trial whose process is SIGKILLed mid-run being
retried from its checkpoint."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from helpers import two_nodes_and_mlflow
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.ray
REPO = Path(__file__).resolve().parents[2]
TINY_SPACE = {"model": {"choice": {"espcn": {"num_features": 8, "num_layers": {"int": [3, 4]}}}},
              "optimizer": {"choice": {"adam": {"lr": {"logfloat": [1e-3, 3e-3]}}}},
              "train": {"batch_size": 8, "patch_size": 32, "steps_per_epoch": 5, "val_max_images": 4}}


def _search_file(tmp_path: Path, tiny_h5: Path, name: str, samples: int, epochs: int) -> Path:
    doc = {"name": name, "data": {"path": str(tiny_h5)}, "objective": {"metric": "val_psnr", "mode": "max"},
           "budget": {"num_samples": samples, "max_epochs": epochs}, "early_stopping": {"name": "none"},
           "searcher": {"name": "random", "seed": 0}, "resources": {"workers": 1}, "space": TINY_SPACE}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _tune(path: Path, store: Path, *extra: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "lensearch", "tune", str(path), "--store", str(store), "--json",
                             *extra], cwd=path.parent, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO), **(env or {})})


def _wait_for_line(proc: subprocess.Popen, text: str, timeout: float) -> list[str]:
    lines, deadline = [], time.time() + timeout
    for line in proc.stderr:
        lines.append(line)
        if text in line:
            return lines
        assert time.time() < deadline, "".join(lines)
    raise AssertionError("".join(lines))


def test_two_searches_at_once_share_one_ray_instance_without_mixing(tiny_h5, tmp_path):
    """A second search on this machine joins the Ray instance the first one started (it used to be refused); each
    keeps its own directory, MLflow parent and trials; a third with the first one's name is refused while it
    runs; and the process that started Ray stops it only once the other search has ended."""
    store = tmp_path / "mlruns"
    first = _tune(_search_file(tmp_path, tiny_h5, "alpha", 2, 2), store)
    procs = [first]
    try:
        head = _wait_for_line(first, "lensearch: search 'alpha' ->", 180)  # Ray is up
        second = _tune(_search_file(tmp_path, tiny_h5, "beta", 3, 2), store)
        procs.append(second)
        twin_dir = tmp_path / "twin"
        twin_dir.mkdir()
        twin = subprocess.run([sys.executable, "-m", "lensearch", "tune", str(_search_file(twin_dir, tiny_h5, "alpha",
                                                                                          1, 1)),
                               "--store", str(store)], capture_output=True, text=True, timeout=120,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
        assert twin.returncode == 2, twin.stderr
        assert twin.stderr.strip().count("\n") == 0 and "'alpha' is running in another process" in twin.stderr
        outs = [p.communicate(timeout=400) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    err_first, err_second = "".join(head) + outs[0][1], outs[1][1]
    assert first.returncode == 0, err_first
    assert second.returncode == 0, err_second
    assert "joining the Ray instance that another lensearch process" in err_second
    a, b = (json.loads(out.strip().splitlines()[-1]) for out, _ in outs)
    assert a["search_dir"] != b["search_dir"] and a["parent_run_id"] != b["parent_run_id"]
    assert a["tracking_uri"] == b["tracking_uri"]   # one MLflow database, written by both drivers
    client = MlflowClient(a["tracking_uri"])
    for result, count in ((a, 2), (b, 3)):
        assert len(result["trials"]) == count and all(t["state"] == "completed" for t in result["trials"])
        parent = client.get_run(result["parent_run_id"])
        children = client.search_runs([parent.info.experiment_id],
                                      f"tags.mlflow.parentRunId = '{result['parent_run_id']}'")
        assert sorted(c.info.run_id for c in children) == sorted(t["run_id"] for t in result["trials"])
        assert all(c.data.tags["lensearch.search"] == result["name"] for c in children)
        trial_dirs = {p.name for p in (Path(result["search_dir"]) / "trials").iterdir()}
        assert trial_dirs == {t["trial_id"] for t in result["trials"]}
    import ray

    if not ray.is_initialized():  # the searches started the instance: it is gone with them
        from lensearch.training.cluster import _local_instances

        assert _local_instances() == []


def test_a_trial_whose_process_is_killed_is_retried_from_its_checkpoint(ray_cluster, tiny_h5, tmp_path, monkeypatch):
    """SIGKILL of the trial's process once epoch 2's checkpoint is written (a real process death, first attempt
    only): the trial is restarted (budget.max_retries), continues from last.pt, completes, and MLflow holds each
    epoch once and says why it was retried."""
    from lensearch.search.schema import load_search
    from lensearch.search.tuner import SearchOptions, run_search

    path = _search_file(tmp_path, tiny_h5, "killed", 1, 3)
    doc = yaml.safe_load(path.read_text())
    doc["budget"]["max_retries"] = 2
    path.write_text(yaml.safe_dump(doc))
    monkeypatch.setenv("LENSEARCH_TEST_KILL_AT_EPOCH", "2")
    outcome = run_search(load_search(path), SearchOptions(store=tmp_path / "mlruns", root=tmp_path, quiet=True))
    (row,) = outcome.rows
    trial_dir = outcome.search_dir / "trials" / row.trial_id
    assert (trial_dir / ".fault_injected").read_text().startswith("SIGKILL at epoch 2")  # it did die
    assert row.state == "completed" and row.epochs == 3, row.state
    client = MlflowClient(outcome.tracking_uri)
    run = client.get_run(row.run_id)
    assert run.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(row.run_id, "val_psnr")] == [1, 2, 3]
    note = run.data.tags["retry.1"]
    assert note.startswith("worker died") and note.endswith("at epoch 2; retry 1/2 from checkpoint"), note
    assert "gloo" not in note and "Traceback" not in note


def test_a_killed_ddp_worker_is_named_and_its_trial_retried_from_the_checkpoint(ray_cluster, tiny_h5, tmp_path,
                                                                               monkeypatch, capfd):
    """A two-worker (gloo DDP) trial whose rank-1 worker is SIGKILLed once epoch 2's checkpoint is written: the
    trial is restarted (budget.max_retries) and continues from last.pt (epoch 2 is not trained again), and the
    message on the terminal and in MLflow names the worker, the cause, the epoch and the retry count instead of
    rank 0's gloo error."""
    from lensearch.search.schema import load_search
    from lensearch.search.tuner import SearchOptions, run_search

    path = _search_file(tmp_path, tiny_h5, "ddpkill", 1, 3)
    doc = yaml.safe_load(path.read_text())
    doc["budget"]["max_retries"] = 2
    doc["resources"] = {"workers": 2}
    doc["space"]["train"]["steps_per_epoch"] = 2
    path.write_text(yaml.safe_dump(doc))
    monkeypatch.setenv("LENSEARCH_TEST_KILL_AT_EPOCH", "2")
    capfd.readouterr()
    outcome = run_search(load_search(path), SearchOptions(store=tmp_path / "mlruns", root=tmp_path))
    err = capfd.readouterr().err
    (row,) = outcome.rows
    trial_dir = outcome.search_dir / "trials" / row.trial_id
    assert (trial_dir / ".fault_injected").read_text().startswith("SIGKILL at epoch 2")  # rank 1 did die
    assert row.state == "completed" and row.epochs == 3, row.state
    expected = "worker 1 died (SIGKILL or out of memory) at epoch 2; retry 1/2 from checkpoint"
    assert f"trial {row.trial_id} {expected}" in err, err  # the progress line
    client = MlflowClient(outcome.tracking_uri)
    run = client.get_run(row.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["retry.1"] == expected
    assert [m.step for m in client.get_metric_history(row.run_id, "val_psnr")] == [1, 2, 3]
    # from the checkpoint: the restarted trial reported epoch 2 (from last.pt) and 3, never epoch 1 again
    (results,) = (outcome.search_dir / "tune").glob("*/result.json")
    epochs = [json.loads(line)["epoch"] for line in results.read_text().splitlines() if line.strip()]
    assert epochs == [1, 2, 3], epochs
    steps = [m.value for m in client.get_metric_history(row.run_id, "steps")]
    assert steps == [2, 4, 6], steps


def test_a_search_on_a_two_node_cluster_logs_to_an_mlflow_server(tiny_h5, tmp_path):
    """`lensearch tune --address HOST:PORT --tracking-uri http://...`: a real two-node Ray cluster (two raylets,
    one CPU each) and a real `mlflow server`; the trials run on both nodes and every trial is logged through the
    server. (Storage is the shared local filesystem: both nodes are on this machine.)"""
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_AUTH_MODE": "disabled"}
    with two_nodes_and_mlflow(tmp_path, env) as (address, uri):
        proc = _tune(_search_file(tmp_path, tiny_h5, "spread", 4, 2), tmp_path / "mlruns", "--address", address,
                     "--tracking-uri", uri)
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        result = json.loads(out.strip().splitlines()[-1])
        assert len(result["trials"]) == 4 and all(t["state"] == "completed" for t in result["trials"])
        client = MlflowClient(uri)
        parent = client.get_run(result["parent_run_id"])
        children = client.search_runs([parent.info.experiment_id],
                                      f"tags.mlflow.parentRunId = '{result['parent_run_id']}'")
        assert len(children) == 4
        assert all(len(client.get_metric_history(c.info.run_id, "val_psnr")) == 2 for c in children)
        # where the trials ran: the node each trial reported from (Tune's result.json of each trial)
        used = set()
        for results in (Path(result["search_dir"]) / "tune").glob("*/result.json"):
            used |= {json.loads(line)["node_id"] for line in results.read_text().splitlines() if line.strip()}
        assert len(used) == 2, used  # both nodes ran trials
