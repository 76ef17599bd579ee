"""End to end on the session's Ray cluster: real Ray Tune + Ray Train (gloo DDP), real Optuna, real MLflow
(SQLite store). These are the slow tests; each trial pays Ray Train's start-up."""

from __future__ import annotations

import hashlib
import json
import shlex
import signal
import time
from pathlib import Path

import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from helpers import interrupt_tune, skimage_psnr  # skimage_psnr: independent of lensearch.metrics

from lensearch.cli import main
from lensearch.data.store import SRDataset, iter_batches
from lensearch.data.transforms import build_normalization
from lensearch.metrics import evaluate
from lensearch.models import registry
from lensearch.search.schema import load_search
from lensearch.search.leaderboard import leaderboard
from lensearch.search.tuner import SearchOptions, run_search
from lensearch.training.checkpoint import load_checkpoint

pytestmark = pytest.mark.ray
REPO = Path(__file__).resolve().parents[2]


def _children(client: MlflowClient, parent_id: str):
    parent = client.get_run(parent_id)
    runs = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'")
    return parent, runs


def _smoke_copy(tmp_path: Path, tiny_h5: Path, **changes) -> Path:
    """The shipped demo search on the session's tiny data, at test size (short reports, no time budget)."""
    doc = yaml.safe_load((REPO / "search_spaces" / "smoke.yaml").read_text())
    doc["data"] = {"path": str(tiny_h5)}
    doc["budget"] = {"num_samples": 4, "max_epochs": 3}
    doc["space"]["train"]["steps_per_epoch"] = 15
    for key, value in changes.items():
        doc[key] = value
    path = tmp_path / f"{doc.get('name', 'smoke')}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_smoke_search_ddp_asha_and_mlflow(ray_cluster, tiny_h5, tmp_path):
    """>= 4 trials over >= 2 architectures, 2 DDP workers each, ASHA stops at least one, early-stopped
    trials release their workers (later trials still start and finish), MLflow holds everything."""
    # The shipped demo search on the session's tiny data, warm-started with its own known-good point and then
    # a deliberately broken one (Adam lr 0.05 throws the model far off bicubic: far below bicubic after the first
    # reports, while the good one stays near or above bicubic's ~32.6 dB), so ASHA's first rung must stop the second
    # trial whatever TPE proposes afterwards.
    doc = yaml.safe_load((REPO / "search_spaces" / "smoke.yaml").read_text())
    good = doc["searcher"]["initial_points"][0]
    frozen = {"model": "rdn", "model.rdn.num_blocks": 1, "normalization": "none", "optimizer": "adam",
              "optimizer.adam.lr": 0.05, "scheduler": "cosine", "loss.pixel": "l1", "train.patch_size": 32}
    space = doc["space"]
    space["optimizer"]["choice"]["adam"]["lr"] = {"logfloat": [5e-4, 0.05]}
    space["model"]["choice"] = {k: v for k, v in space["model"]["choice"].items() if k in ("span", "rdn")}
    space["train"]["steps_per_epoch"] = 40
    path = _smoke_copy(tmp_path, tiny_h5, space=space, resources={"workers": 2},
                       searcher={**doc["searcher"], "initial_points": [good, frozen]})
    outcome = run_search(load_search(path), SearchOptions(store=tmp_path / "mlruns", root=tmp_path, quiet=True))

    assert len(outcome.rows) == 4
    states = [r.state for r in outcome.rows]
    frozen_row = next(r for r in outcome.rows if r.params["optimizer.adam.lr"] == 0.05)
    first_rung = doc["early_stopping"]["grace_period"]  # ASHA's first decision
    assert frozen_row.state == f"stopped early at epoch {first_rung}", states
    assert not any(s.startswith("errored") for s in states), states
    # one trial at a time fits 2 CPUs, so trials 3 and 4 started after trial 2 was stopped mid-fit():
    # they ran, so its workers' placement group was released (the leak in the stack notes)
    assert all(r.epochs >= 1 for r in outcome.rows) and states.count("completed") >= 2, states
    models = {r.params["model"] for r in outcome.rows}
    assert models == {"rdn", "span"}, models
    for row in outcome.rows:  # inactive branches never reach a trial's config
        other = ({"rdn", "span"} - {row.params["model"]}).pop()
        assert not any(k.startswith(f"model.{other}.") for k in row.params)
        if row.params["normalization"] == "none":
            assert not any(k.startswith("normalization.asinh") for k in row.params)
        assert row.best["steps"] == 40 * row.best["epoch"]  # every report is steps_per_epoch optimizer steps
    best = outcome.best()
    assert best.checkpoint and Path(best.checkpoint).exists()

    client = MlflowClient(outcome.tracking_uri)
    parent, children = _children(client, outcome.parent_run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["best_val_psnr"] == pytest.approx(best.best["val_psnr"])
    assert "version.ray" in parent.data.tags
    val = next(iter_batches(tiny_h5, "val", 64, ("lr", "hr", "hr_clean")))  # independent recomputation
    bic = torch.nn.functional.interpolate(torch.from_numpy(val["lr"]), scale_factor=2, mode="bicubic",
                                          align_corners=False).numpy()
    assert parent.data.metrics["bicubic_val_psnr"] == pytest.approx(skimage_psnr(bic, val["hr"]), abs=1e-3)
    assert parent.data.metrics["noise_ceiling_val_psnr"] == pytest.approx(skimage_psnr(val["hr_clean"], val["hr"]),
                                                                         abs=1e-3)
    assert "bicubic val_psnr" in leaderboard(outcome) and "noise ceiling" in leaderboard(outcome)
    assert len(children) == 4
    by_trial = {c.data.tags["lensearch.trial_id"]: c for c in children}
    for row in outcome.rows:
        child = by_trial[row.trial_id]
        history = client.get_metric_history(child.info.run_id, "val_psnr")
        assert [m.step for m in history] == list(range(1, row.epochs + 1))
        assert child.data.params["model"] == row.params["model"]
        assert child.data.tags["state"] == row.state
        artifacts = {a.path for a in client.list_artifacts(child.info.run_id)}
        assert "samples.png" in artifacts and "checkpoint" in artifacts


def test_single_worker_trials_reuse_their_process_and_train_as_in_a_fresh_one(ray_cluster, tiny_h5, tmp_path):
    """Tune's reuse_actors (search/tuner.py): 4 single-worker trials on 2 CPUs run in 2 processes, and the same
    configuration trained first in a fresh process and last in a reused one reports the same numbers (nothing a
    trial sets up leaks into the next)."""
    from ray import tune

    doc = yaml.safe_load((REPO / "search_spaces" / "smoke.yaml").read_text())
    good = doc["searcher"]["initial_points"][0]
    other = {**good, "optimizer.adam.lr": 1e-3, "normalization": "none"}
    points = [good, other, {**other, "optimizer.adam.lr": 5e-4}, good]
    path = _smoke_copy(tmp_path, tiny_h5, name="reuse", budget={"num_samples": 4, "max_epochs": 2},
                       early_stopping={"name": "none"}, resources={"workers": 1},
                       searcher={"name": "random", "seed": 0, "initial_points": points})

    class Pids(tune.Callback):
        def __init__(self):
            self.reports, self.order = {}, []

        def on_trial_start(self, iteration, trials, trial, **info):
            self.order.append(trial.trial_id)

        def on_trial_result(self, iteration, trials, trial, result, **info):
            self.reports.setdefault(trial.trial_id, []).append((result["pid"], result["val_psnr"]))

    seen = Pids()
    outcome = run_search(load_search(path), SearchOptions(store=tmp_path / "mlruns", root=tmp_path, quiet=True,
                                                          callbacks=[seen]))
    assert [r.state for r in outcome.rows] == ["completed"] * 4
    pids = [seen.reports[t][0][0] for t in seen.order]
    assert len(set(pids)) == 2, pids
    twice = [r.trial_id for r in outcome.rows if json.dumps(r.params, sort_keys=True, default=str)
             == json.dumps(next(x.params for x in outcome.rows if x.params["optimizer.adam.lr"] == 2e-3),
                           sort_keys=True, default=str)]
    first, last = sorted(twice, key=seen.order.index)
    assert seen.order.index(last) == 3 and pids[3] in pids[:2]  # the last trial ran in a process used before
    assert [v for _, v in seen.reports[last]] == pytest.approx([v for _, v in seen.reports[first]], abs=1e-4)
    for row in outcome.rows:  # every trial drew its best epoch's grid (at its last epoch, with no early stopping)
        assert (outcome.search_dir / "trials" / row.trial_id / "samples.png").exists()


def test_multi_objective_search_marks_a_pareto_front(ray_cluster, tiny_h5, tmp_path):
    path = _smoke_copy(tmp_path, tiny_h5, name="mo",
                       objective=[{"metric": "val_psnr", "mode": "max"}, {"metric": "params", "mode": "min"}],
                       budget={"num_samples": 3, "max_epochs": 1}, early_stopping={"name": "none"},
                       searcher={"name": "nsga2", "seed": 0}, resources={"workers": 1})
    outcome = run_search(load_search(path), SearchOptions(store=tmp_path / "mlruns", root=tmp_path, quiet=True))
    assert len(outcome.rows) == 3 and all(r.state == "completed" for r in outcome.rows)
    from lensearch.search.results import pareto_front

    front = pareto_front(outcome)
    assert front
    for row in outcome.rows:  # nothing outside the front dominates a front member
        for f in front:
            assert not (row.best["val_psnr"] > f.best["val_psnr"] and row.best["params"] < f.best["params"])
    assert "Pareto front" in leaderboard(outcome)


def test_train_cli_two_worker_ddp_reduces_metrics_over_all_ranks(ray_cluster, tiny_h5, tmp_path, capsys,
                                                                  monkeypatch):
    run = {"data": {"path": str(tiny_h5)},
           "model": {"name": "rdn", "num_features": 8, "num_blocks": 1, "num_layers": 2, "growth": 8},
           "normalization": "minmax", "optimizer": {"name": "adam", "lr": 1e-3},
           "train": {"epochs": 2, "batch_size": 8}}
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(run))
    monkeypatch.chdir(tmp_path)
    assert main(["train", str(path), "--workers", "2", "--json", "--quiet"]) == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    trial = out["trials"][0]
    assert trial["state"] == "completed" and trial["epochs"] == 2
    # The reported val_psnr is the mean over the WHOLE val split (both ranks' shards): recompute it here.
    ckpt = load_checkpoint(Path(trial["checkpoint"]).with_name("last.pt"))
    model = registry.build("rdn", scale=2, **ckpt["model_params"]).eval()
    model.load_state_dict(ckpt["eval_model"])
    norm = build_normalization(ckpt["normalization"])
    val = SRDataset(tiny_h5, split="val")
    lr = torch.stack([val[i]["lr"] for i in range(len(val))])
    hr = torch.stack([val[i]["hr"] for i in range(len(val))])
    with torch.no_grad():
        psnr = evaluate(norm.invert(model(norm.apply(lr, lr)), lr), hr)["psnr"].mean().item()
    assert psnr == pytest.approx(ckpt["metrics"]["val_psnr"], abs=1e-3)
    client = MlflowClient(out["tracking_uri"])
    _, children = _children(client, out["parent_run_id"])
    assert len(children) == 1 and children[0].data.metrics["val_psnr"] == pytest.approx(psnr, abs=1e-3)
    losses = [m.value for m in client.get_metric_history(children[0].info.run_id, "train_loss")]
    assert len(losses) == 2 and losses[1] < losses[0]  # the DDP run learns


def test_interrupted_search_resumes_without_rerunning_or_relogging(ray_cluster, tiny_h5, tmp_path, monkeypatch,
                                                                   capsys):
    path = _smoke_copy(tmp_path, tiny_h5, name="resumable", budget={"num_samples": 3, "max_epochs": 2},
                       early_stopping={"name": "none"}, resources={"workers": 1})
    store = tmp_path / "mlruns"
    # interrupted (Ctrl-C) once the first trial has completed; --address auto joins the session's cluster
    code, output = interrupt_tune(path, "--store", store, "--address", "auto", cwd=tmp_path)
    assert code == 130, output
    search_dir = next((store / "searches").glob("resumable-*"))
    runs_file = json.loads((search_dir / "mlflow_runs.json").read_text())
    finished_before = set(runs_file["finished"])
    assert len(finished_before) >= 1
    hint = [ln for ln in output.splitlines() if "continue with: " in ln]
    assert len(hint) == 1, output

    # the printed command, verbatim, from another working directory (no --store: the search knows its own)
    command = shlex.split(hint[0].split("continue with: ", 1)[1])
    assert command[:2] == ["lensearch", "tune"]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main([*command[1:], "--quiet", "--json"]) == 0  # (after the program name)
    outcome = json.loads(capsys.readouterr().out)
    assert outcome["search_dir"] == str(search_dir)
    assert outcome["tracking_uri"] == f"sqlite:///{store / 'mlflow.db'}"  # the same database, not ./mlruns
    assert list(elsewhere.iterdir()) == []
    assert len(outcome["trials"]) == 3 and all(r["state"] == "completed" for r in outcome["trials"])
    client = MlflowClient(outcome["tracking_uri"])
    parent, children = _children(client, outcome["parent_run_id"])
    assert parent.info.run_id == runs_file["parent"]
    assert sorted(c.data.tags["lensearch.trial_id"] for c in children) == sorted(r["trial_id"]
                                                                                 for r in outcome["trials"])
    for child in children:                            # one child per trial, none duplicated
        history = client.get_metric_history(child.info.run_id, "val_psnr")
        assert [m.step for m in history] == [1, 2]    # finished trials were not rerun or logged twice
    # the Optuna study is on disk and went on after the resume: each trial once, all told complete
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    study = optuna.load_study(study_name="resumable",
                              storage=JournalStorage(JournalFileBackend(str(search_dir / "optuna.journal"))))
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 3
    # the reproducibility record: seed, versions, the data file's digest
    assert parent.data.params["searcher_seed"] == "0"
    for package in ("lensearch", "torch", "ray", "optuna", "mlflow", "numpy", "h5py"):
        assert parent.data.tags[f"version.{package}"]
    assert parent.data.params["data_sha256"] == hashlib.sha256(tiny_h5.read_bytes()).hexdigest()


def test_a_diverging_trial_errors_alone_and_is_logged_with_its_reason(ray_cluster, tiny_h5, tmp_path, capfd,
                                                                      monkeypatch):
    space = {"model": {"choice": {"rdn": {"num_features": 8, "num_blocks": 1, "num_layers": 2, "growth": 8}}},
             "optimizer": {"choice": {"sgd": {"lr": {"categorical": [1e-3, 1e30]}, "momentum": 0.0}}},
             "train": {"batch_size": 16}}
    points = [{"model": "rdn", "optimizer": "sgd", "optimizer.sgd.lr": lr} for lr in (1e30, 1e-3)]
    path = _smoke_copy(tmp_path, tiny_h5, name="diverge", space=space, budget={"num_samples": 2, "max_epochs": 1},
                       early_stopping={"name": "none"}, resources={"workers": 1},
                       searcher={"name": "random", "seed": 0, "initial_points": points})
    monkeypatch.chdir(tmp_path)
    assert main(["tune", str(path), "--store", str(tmp_path / "mlruns")]) == 0  # progress lines on
    out, err = capfd.readouterr()
    # one line for the failure on the terminal (Ray's ~85-line traceback stays in MLflow): type and message
    assert "Traceback" not in err and "Traceback" not in out, err
    reason = "errored: NonFiniteLoss: non-finite loss"
    assert len([ln for ln in err.splitlines() if reason in ln]) == 1, err
    assert any(ln.startswith(f"{'-':<5}") and reason in ln for ln in out.splitlines()), out  # the leaderboard
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    (experiment,) = [e for e in client.search_experiments() if e.name == "diverge"]
    runs = {r.data.params["optimizer.sgd.lr"]: r for r in client.search_runs(
        [experiment.experiment_id], "tags.`lensearch.kind` = 'trial'")}
    assert runs["0.001"].data.tags["state"] == "completed"
    failed = runs["1e+30"]
    assert failed.info.status == "FAILED" and failed.data.tags["state"].startswith(reason)
    assert "epoch 1, step" in failed.data.tags["state"]
    text = client.download_artifacts(failed.info.run_id, "error.txt", str(tmp_path))
    kept = Path(text).read_text()  # the whole traceback is kept, in MLflow (without terminal colours)
    assert kept.count('File "') >= 3 and "NonFiniteLoss" in kept and "\x1b[" not in kept, kept


def test_the_time_budget_cuts_running_trials_at_a_report_and_keeps_their_best(ray_cluster, tiny_h5, tmp_path):
    path = _smoke_copy(tmp_path, tiny_h5, name="timed", budget={"num_samples": 2, "max_epochs": 500,
                                                                "time_budget_s": 20},
                       early_stopping={"name": "none"}, resources={"workers": 1})
    t0 = time.time()
    outcome = run_search(load_search(path), SearchOptions(store=tmp_path / "mlruns", root=tmp_path, quiet=True))
    assert time.time() - t0 < 120
    assert len(outcome.rows) == 2
    client = MlflowClient(outcome.tracking_uri)
    for row in outcome.rows:
        assert row.state == f"cut by time budget at epoch {row.epochs}" and 1 <= row.epochs < 500, row.state
        assert row.checkpoint and Path(row.checkpoint).exists()  # the best so far is kept
        run = client.get_run(row.run_id)
        assert run.info.status == "FINISHED" and run.data.tags["state"] == row.state
        gap = client.get_metric_history(row.run_id, "val_gap_closed")
        assert len(gap) == row.epochs
    board = leaderboard(outcome)
    assert "gap closed" in board and "cut by time budget" in board


def test_sigterm_stops_a_search_like_ctrl_c(ray_cluster, tiny_h5, tmp_path):
    """`kill PID` (what batch schedulers send) ends a search the way Ctrl-C does: the finished trial is kept, the
    parent MLflow run is closed as KILLED, the resume hint is printed and the exit status is 130. It used to
    kill the driver on the spot, leaving MLflow runs RUNNING."""
    path = _smoke_copy(tmp_path, tiny_h5, name="terminated", budget={"num_samples": 3, "max_epochs": 2},
                       early_stopping={"name": "none"}, resources={"workers": 1})
    store = tmp_path / "mlruns"
    code, output = interrupt_tune(path, "--store", store, "--address", "auto", cwd=tmp_path, sig=signal.SIGTERM)
    assert code == 130, output
    assert "INTERRUPTED — continue with: lensearch tune" in output
    runs_file = json.loads(next((store / "searches").glob("terminated-*")).joinpath("mlflow_runs.json").read_text())
    assert len(runs_file["finished"]) >= 1
    client = MlflowClient(f"sqlite:///{store / 'mlflow.db'}")
    assert client.get_run(runs_file["parent"]).info.status == "KILLED"
    for trial in runs_file["finished"]:
        assert client.get_run(runs_file["trials"][trial]).info.status == "FINISHED"
