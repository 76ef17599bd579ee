"""A search whose store is object storage, for real on this machine: a two-node Ray cluster
(``ray.cluster_utils.Cluster``, one CPU per node), an S3-compatible server started here (moto) holding the store
and the data file, and an ``mlflow server`` as the tracking server. The trials run on both nodes, their
checkpoints land in the bucket, MLflow has every run, and ``lensearch export`` and ``lensearch report`` work from the
bucket alone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

pytest.importorskip("moto.server", reason="moto[server] is not installed (pip install 'moto[server]')")

from helpers import two_nodes_and_mlflow  # noqa: E402
from s3server import BUCKET, s3_server  # noqa: E402

pytestmark = pytest.mark.ray
REPO = Path(__file__).resolve().parents[2]
SPACE = {"model": {"choice": {"espcn": {"num_features": 8, "num_layers": {"int": [3, 4]}}}},
         "optimizer": {"choice": {"adam": {"lr": {"logfloat": [1e-3, 3e-3]}}}},
         "train": {"batch_size": 8, "patch_size": 32, "steps_per_epoch": 3, "val_max_images": 4}}


def _lensearch(*args: str, env: dict, cwd: Path, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lensearch", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def s3_cluster(tiny_h5, tmp_path_factory):
    """The S3-compatible server (the store and the data file), the two-node Ray cluster and the MLflow server the
    tests of this module share: ``(env, address, tracking URI, data URI, store URI)``."""
    from lensearch import storage

    root = tmp_path_factory.mktemp("s3_cluster")
    with s3_server() as aws:
        # every process (both nodes, the driver, the export) gets the store's settings and its own cache root
        env = {**os.environ, **aws, "PYTHONPATH": str(REPO), "RAY_AUTH_MODE": "disabled", "PYTHONUNBUFFERED": "1",
               "LENSEARCH_CACHE": str(root / "cache")}
        data_uri = f"s3://{BUCKET}/data/tiny.h5"
        storage.upload(tiny_h5, data_uri)
        with two_nodes_and_mlflow(root, env) as (address, uri):
            yield env, address, uri, data_uri, f"s3://{BUCKET}/lensearch"


def test_a_search_stored_in_s3_on_two_nodes_exports_and_reports_from_the_bucket(s3_cluster, tmp_path):
    from mlflow.tracking import MlflowClient

    from lensearch import storage

    env, address, uri, data_uri, store = s3_cluster
    env = {**env, "LENSEARCH_CACHE": str(tmp_path / "cache")}
    doc = {"name": "s3", "data": {"path": data_uri}, "objective": {"metric": "val_psnr", "mode": "max"},
           "budget": {"num_samples": 2, "max_epochs": 2}, "early_stopping": {"name": "none"},
           "searcher": {"name": "random", "seed": 0}, "resources": {"workers": 1}, "space": SPACE}
    (tmp_path / "s3.yaml").write_text(yaml.safe_dump(doc))
    # two trials of one CPU on two one-CPU nodes: they run at once, one on each node
    tune = _lensearch("tune", "s3.yaml", "--store", store, "--address", address, "--tracking-uri", uri,
                      "--json", "--quiet", env=env, cwd=tmp_path, timeout=300)
    assert tune.returncode == 0, tune.stderr
    result = json.loads(tune.stdout.strip().splitlines()[-1])
    trials = result["trials"]
    assert len(trials) == 2 and all(t["state"] == "completed" for t in trials), trials
    search_uri = result["search_uri"]
    assert search_uri.startswith(f"{store}/searches/s3-")

    # the store holds the search: the driver's files, Tune's state and every trial's checkpoints
    names = storage.list_names(search_uri)
    assert {"search.yaml", "budget.json", "origin.json", "mlflow_runs.json", "optuna.journal", "tune",
            "trials"} <= set(names), names
    assert sorted(storage.list_names(f"{search_uri}/trials")) == sorted(t["trial_id"] for t in trials)
    for t in trials:
        assert storage.list_names(f"{search_uri}/trials/{t['trial_id']}/checkpoints") == ["best.pt", "last.pt"]
        assert t["checkpoint"] == f"{search_uri}/trials/{t['trial_id']}/checkpoints/best.pt"
    # the trials ran on both nodes (each report carries its node; Tune's result.json, in the store)
    used = set()
    for trial_dir in storage.list_names(f"{search_uri}/tune"):
        text = storage.read_bytes(f"{search_uri}/tune/{trial_dir}/result.json")
        if text:
            used |= {json.loads(line)["node_id"] for line in text.decode().splitlines() if line.strip()}
    assert len(used) == 2, used

    # MLflow (the server) has the parent and every trial with both epochs, the checkpoints named by URI
    client = MlflowClient(uri)
    parent = client.get_run(result["parent_run_id"])
    assert parent.data.tags["lensearch.search_dir"] == search_uri
    children = client.search_runs([parent.info.experiment_id],
                                  f"tags.mlflow.parentRunId = '{result['parent_run_id']}'")
    assert sorted(c.info.run_id for c in children) == sorted(t["run_id"] for t in trials)
    for child in children:
        assert [m.step for m in client.get_metric_history(child.info.run_id, "val_psnr")] == [1, 2]
        assert child.data.tags["checkpoint"].startswith(f"{search_uri}/trials/")
        inputs = client.get_run(child.info.run_id).inputs.dataset_inputs
        sources = {json.loads(d.dataset.source)["uri"] for d in inputs}
        assert sources == {data_uri}  # the data as named, digested from the driver's copy

    # export from the bucket alone: a fresh cache (another machine), the search named by its URI
    env_export = {**env, "LENSEARCH_CACHE": str(tmp_path / "export-cache")}
    export = _lensearch("export", search_uri, "--out", str(tmp_path / "model"), "--json", env=env_export,
                        cwd=tmp_path, timeout=240)
    assert export.returncode == 0, export.stderr
    manifest = json.loads(export.stdout.strip().splitlines()[-1])
    best = max(trials, key=lambda t: t["best"]["val_psnr"])
    assert manifest["source"]["trial_id"] == best["trial_id"]
    assert manifest["registered"]["version"] == 1
    assert manifest["source"]["search_dir"] == search_uri
    assert manifest["source"]["checkpoint"] == best["checkpoint"]
    assert manifest["data"]["uri"] == data_uri

    # the report from the bucket too: the search by name under --store s3://..., the data file fetched
    # from the bucket for the image panels and physics; the report names the search by its URI
    report = _lensearch("report", "s3", "--store", store, "--out", str(tmp_path / "report"), "--json",
                        env=env_export, cwd=tmp_path, timeout=240)
    assert report.returncode == 0, report.stderr
    summary = json.loads(report.stdout.strip().splitlines()[-1])
    (section,) = summary["searches"]
    assert section["dir"] == search_uri and section["parent_run_id"] == result["parent_run_id"]
    assert {row["trial"] for row in section["leaderboard"]} == {best["trial_id"]}  # one model: its best
    assert section["leaderboard"][0]["val_psnr"] == pytest.approx(best["best"]["val_psnr"])
    assert set(section["physics"]) == {"bicubic", "espcn"}
    assert search_uri in summary["downstream"]["how_to"]
    assert search_uri in (tmp_path / "report" / "report.md").read_text()
    unknown = _lensearch("report", "nosuch", "--store", store, "--out", str(tmp_path / "r2"), env=env_export,
                         cwd=tmp_path, timeout=120)
    assert unknown.returncode == 2 and len(unknown.stderr.strip().splitlines()) == 1, unknown.stderr
    assert "unknown search 'nosuch'" in unknown.stderr

    from lensearch.upscale import Upscaler

    lr = np.random.default_rng(0).random((2, 1, 32, 32), dtype=np.float32)
    sr = Upscaler(tmp_path / "model")(lr)
    assert sr.shape == (2, 1, 64, 64) and np.isfinite(sr).all()


def test_a_search_in_s3_interrupted_and_resumed_on_another_machine_keeps_each_trial_once(s3_cluster, tmp_path):
    """Ctrl-C once a trial has completed, then `--resume s3://.../searches/<dir>` from another machine (an empty
    cache: the first driver's working copy is gone). The search goes on where it stopped: the same MLflow parent,
    every trial once in MLflow with each epoch once, no configuration drawn twice, ASHA's records restored from
    the bucket, and every trial's checkpoints in the bucket load."""
    import shlex
    import shutil

    from helpers import interrupt_tune
    from mlflow.tracking import MlflowClient

    from lensearch import storage
    from lensearch.training.checkpoint import load_checkpoint

    env, address, uri, data_uri, store = s3_cluster
    doc = {"name": "s3resume", "data": {"path": data_uri}, "objective": {"metric": "val_psnr", "mode": "max"},
           "budget": {"num_samples": 3, "max_epochs": 2},
           "early_stopping": {"name": "asha", "grace_period": 1, "reduction_factor": 2},
           "searcher": {"name": "random", "seed": 0}, "resources": {"workers": 1}, "space": SPACE}
    path = tmp_path / "s3resume.yaml"
    path.write_text(yaml.safe_dump(doc))
    code, output = interrupt_tune(path, "--store", store, "--address", address, "--tracking-uri", uri, cwd=tmp_path,
                                  env={**env, "LENSEARCH_CACHE": str(tmp_path / "cache-a")})
    assert code == 130, output
    (dir_name,) = [n for n in storage.list_names(f"{store}/searches") if n.startswith("s3resume-")]
    search_uri = f"{store}/searches/{dir_name}"
    before = json.loads(storage.read_bytes(f"{search_uri}/mlflow_runs.json"))
    assert before["finished"], before
    assert storage.exists(f"{search_uri}/scheduler_state.json")  # ASHA's records, mirrored to the bucket
    shutil.rmtree(tmp_path / "cache-a")  # another machine: nothing of the first driver's copy is at hand

    # the printed hint, run as printed: the search file is the copy in the bucket, the search its URI
    hints = [ln.split("continue with: ", 1)[1] for ln in output.splitlines() if "continue with: " in ln]
    assert hints, output
    words = shlex.split(hints[-1])
    hint = hints[-1]
    assert words[:2] == ["lensearch", "tune"] and words[2] == f"{search_uri}/search.yaml", hint
    assert words[3:5] == ["--resume", search_uri] and words[5:] == ["--address", address], hint
    resumed = _lensearch(*words[1:], "--json", env={**env, "LENSEARCH_CACHE": str(tmp_path / "cache-b")},
                         cwd=tmp_path, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "restored the AsyncHyperBandScheduler records of" in resumed.stderr, resumed.stderr
    result = json.loads(resumed.stdout.strip().splitlines()[-1])
    assert result["search_uri"] == search_uri and result["parent_run_id"] == before["parent"]
    trials = result["trials"]
    assert len({t["trial_id"] for t in trials}) == len(trials) == 3, trials
    assert all(t["state"] == "completed" or t["state"].startswith("stopped early") for t in trials), trials
    assert len({json.dumps(t["params"], sort_keys=True) for t in trials}) == 3  # the searcher went on, no repeats

    client = MlflowClient(uri)
    parent = client.get_run(before["parent"])
    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{before['parent']}'")
    by_trial = {c.data.tags["lensearch.trial_id"]: c for c in children}
    assert len(children) == len(by_trial) == 3 and set(by_trial) == {t["trial_id"] for t in trials}
    for t in trials:
        run = by_trial[t["trial_id"]]
        assert run.info.run_id == t["run_id"] and run.info.status == "FINISHED"
        if t["trial_id"] in before["finished"]:  # finished before the interrupt: the same run, not logged again
            assert run.info.run_id == before["trials"][t["trial_id"]]
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_psnr")]
        assert steps == list(range(1, t["epochs"] + 1)), (t["trial_id"], steps)
        # the checkpoints in the bucket are whole: they load, and last.pt is the trial's last epoch
        folder = f"{search_uri}/trials/{t['trial_id']}/checkpoints"
        assert storage.list_names(folder) == ["best.pt", "last.pt"]
        for name in ("best.pt", "last.pt"):
            storage.download(f"{folder}/{name}", tmp_path / t["trial_id"] / name)
        last = load_checkpoint(tmp_path / t["trial_id"] / "last.pt", map_location="cpu")
        assert last["epoch"] == t["epochs"] or t["state"].startswith("stopped early"), (t, last["epoch"])
        assert load_checkpoint(tmp_path / t["trial_id"] / "best.pt", map_location="cpu")["model"]
