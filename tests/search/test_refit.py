"""The refit phase: a run that starts from another run's checkpoint (``train.init_from``), the configuration a
refit derives from a trial's checkpoint, and a time-budgeted search that ends with its refit."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from lensearch.data.store import train_stats
from lensearch.search.refit import pick, refit_config, refit_seconds
from lensearch.search.schema import load_search
from lensearch.search.leaderboard import leaderboard
from lensearch.search.results import TrialRow, summary_metrics
from lensearch.search.tuner import SearchOptions, run_search
from lensearch.errors import UserError
from lensearch.training.checkpoint import load_checkpoint
from lensearch.training.config import resolve_run_config
from lensearch.training.context import RunContext
from lensearch.training.loop import fit
from lensearch.training.runinfo import RunInfo

ESPCN = {"name": "espcn", "num_features": 8, "num_layers": 3}


def _fit(tiny_h5, run_dir, lr, train):
    run = RunInfo(data_path=str(tiny_h5), dir=str(run_dir), scale=2, has_clean=True, stats=train_stats(tiny_h5))
    reports = []
    config = resolve_run_config({"model": ESPCN, "optimizer": {"name": "adam", "lr": lr},
                                 "scheduler": {"name": "cosine"}, "train": train})
    fit(config, run, RunContext(torch.device("cpu"), report_fn=reports.append))
    return reports


def test_init_from_continues_the_weights_with_this_runs_learning_rate(tiny_h5, tmp_path):
    base = {"patch_size": 32, "steps_per_epoch": 20, "batch_size": 8, "val_max_images": 8}
    first = _fit(tiny_h5, tmp_path / "a", 3e-3, {**base, "epochs": 2})
    source = tmp_path / "a" / "checkpoints" / "last.pt"
    # a learning rate of ~0: the continued run must score what the source scored (same weights), and its
    # optimizer must run at the new rate, not at the source's (Adam's moments come along)
    cont = _fit(tiny_h5, tmp_path / "b", 1e-12, {**base, "epochs": 1, "init_from": str(source)})
    assert cont[0]["steps"] == 20  # counters start afresh
    assert cont[0]["val_psnr"] == pytest.approx(first[-1]["val_psnr"], abs=1e-4)
    assert cont[0]["lr"] < 1e-11
    # from scratch at the same rate it would still be at bicubic (zero-initialised tail, lr ~0)
    fresh = _fit(tiny_h5, tmp_path / "c", 1e-12, {**base, "epochs": 1})
    assert abs(fresh[0]["val_psnr"] - first[-1]["val_psnr"]) > 0.05
    with pytest.raises(ValueError, match="train.init_from: .*missing.pt does not exist"):
        _fit(tiny_h5, tmp_path / "d", 1e-3, {**base, "epochs": 1, "init_from": str(tmp_path / "missing.pt")})


def test_refit_config_fits_the_reports_to_the_time_and_restarts_the_rate():
    config = resolve_run_config({"model": ESPCN, "optimizer": {"name": "adam", "lr": 1e-3},
                                 "scheduler": {"name": "warmup_cosine"}, "train": {"epochs": 24}})
    ckpt = {"config": config, "epoch": 10, "run_seconds": 50.0, "metrics": {"lr": 1e-5}}
    out = refit_config(ckpt, Path("/x/best.pt"), seconds=65.0)
    assert out["train"]["epochs"] == 12 and out["train"]["time_limit_s"] == 60.0  # (65 - 5 s start) / 5 s
    assert out["train"]["init_from"] == "/x/best.pt"
    assert out["optimizer"]["lr"] == pytest.approx(5e-4) and out["scheduler"] == {"name": "cosine"}
    cut = refit_config({**ckpt, "metrics": {"lr": 8e-4}}, Path("/x/best.pt"), seconds=65.0)
    assert cut["optimizer"]["lr"] == pytest.approx(8e-4)  # cut mid-schedule: continue at the rate it had
    assert config["optimizer"]["lr"] == 1e-3  # the checkpoint's configuration is not modified
    assert refit_seconds({"time_budget_s": 100, "refit_share": 0.25}) == 25.0
    assert refit_seconds({"time_budget_s": None, "refit_share": 0.25}) == 0.0


def test_pick_takes_the_best_rows_with_checkpoints_by_the_objective():
    rows = [TrialRow(t, "completed", 3, {"val_psnr": v}, {}, ck, None)
            for t, v, ck in (("a", 30.0, "a.pt"), ("b", 32.0, "b.pt"), ("c", 33.0, None), ("d", 31.0, "d.pt"))]
    assert [r.trial_id for r in pick(rows, [("val_psnr", "max")], 2)] == ["b", "d"]
    assert [r.trial_id for r in pick(rows, [("val_psnr", "min")], 1)] == ["a"]
    assert pick(rows, [("val_psnr", "max"), ("params", "min")], 2) == []  # a front has no one best


def test_refit_share_is_validated(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"space": {"model": {"name": "espcn"}}, "budget": {"refit_share": 1.5}}))
    with pytest.raises(UserError, match=r"bad.yaml: budget.refit_share: expected a number in \[0, 1\), got 1.5"):
        load_search(path)


def test_a_timed_search_ends_with_a_refit_of_its_best_trials(ray_cluster, tiny_h5, tmp_path):
    spec = {
        "name": "refit", "data": {"path": str(tiny_h5)}, "objective": {"metric": "val_psnr", "mode": "max"},
        "budget": {"num_samples": 2, "max_epochs": 500, "time_budget_s": 40, "refit_share": 0.4},
        "early_stopping": {"name": "none"}, "searcher": {"name": "random", "seed": 0}, "resources": {"workers": 1},
        "space": {"model": {"name": "espcn", "num_features": 8, "num_layers": 3},
                  "optimizer": {"name": "adam", "lr": {"logfloat": [1e-3, 3e-3]}},
                  "scheduler": {"name": "cosine"},
                  "train": {"patch_size": 32, "steps_per_epoch": 10, "batch_size": 8, "val_max_images": 8}},
    }
    path = tmp_path / "refit.yaml"
    path.write_text(yaml.safe_dump(spec))
    outcome = run_search(load_search(path), SearchOptions(store=tmp_path / "mlruns", root=tmp_path, quiet=True))
    searched = [r for r in outcome.rows if not r.state.startswith("refit of")]
    refits = [r for r in outcome.rows if r.state.startswith("refit of")]
    assert len(searched) == 2 and len(refits) == 2, [r.state for r in outcome.rows]
    assert {r.params["refit_of"] for r in refits} == {r.trial_id for r in searched}
    client = MlflowClient(outcome.tracking_uri)
    for row in refits:
        source = next(r for r in searched if r.trial_id == row.params["refit_of"])
        assert source.params and source.params.items() <= row.params.items()  # shown with its source's params
        ckpt = load_checkpoint(Path(row.checkpoint))
        assert ckpt["config"]["train"]["init_from"].endswith(f"{source.trial_id}/checkpoints/best.pt")
        run = client.get_run(row.run_id)
        assert run.info.status == "FINISHED" and run.data.tags["state"] == row.state
        assert run.data.params["refit_of"] == source.trial_id
    summary = summary_metrics(outcome)
    assert summary["refit"] == 2 and summary["trials"] == 4
    best = outcome.best()
    assert summary["best_trial"] == best.trial_id
    assert best.best["val_psnr"] >= max(r.best["val_psnr"] for r in searched)
    assert "refit of" in leaderboard(outcome)
