"""``lensearch report`` on a tiny real search (Ray Tune + Ray Train + Optuna + MLflow on the session cluster)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from lensearch.cli import main


def _children(outcome):
    client = MlflowClient(outcome.tracking_uri)
    parent = client.get_run(outcome.parent_run_id)
    runs = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{outcome.parent_run_id}' "
                              "and tags.`lensearch.kind` = 'trial'")  # (a registered export nests its run there too)
    return client, parent, runs


@pytest.mark.ray
def test_report_of_a_real_search(report_search, tiny_h5, tmp_path, capsys):
    from lensearch.report.figures import is_informative

    outcome = report_search
    store = outcome.search_dir.parents[1]
    out = tmp_path / "rep-report"
    assert main(["report", str(outcome.search_dir), "--out", str(out), "--store", str(store),
                 "--data", str(tiny_h5), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    html = (out / "report.html").read_text()
    md = (out / "report.md").read_text()

    # every figure the documents name exists, is a real plot (a few KB, not one colour), and nothing else is linked
    linked = set(re.findall(r"src='([^']+)'", html)) | set(re.findall(r"href='([^']+)'", html))
    assert linked == set(summary["figures"]) == set(re.findall(r"\]\(([^)]+\.png)\)", md))
    for name in linked:
        assert (out / name).is_file(), name
        info = is_informative(out / name)
        assert info["bytes"] > 5000 and info["std"] > 0.01, (name, info)
    names = " ".join(linked)
    for kind in ("curves", "stopping", "compute", "importance", "effect_model", "panel0", "profile", "spectrum"):
        assert kind in names, (kind, sorted(linked))

    # the leaderboard equals MLflow: per model, the best trial's value at its best epoch and the reference rows
    client, parent, runs = _children(outcome)
    (search,) = summary["searches"]
    board = {row["model"]: row for row in search["leaderboard"]}
    models = {r.data.params["model"] for r in runs}
    assert set(board) == models == {"span", "espcn"}
    for model, row in board.items():
        best = None
        for run in runs:
            if run.data.params["model"] != model:
                continue
            hist = client.get_metric_history(run.info.run_id, "val_psnr")
            top = max(hist, key=lambda m: (m.value, -m.step))
            if best is None or top.value > best[0]:
                best = (top.value, top.step, run)
        value, step, run = best
        assert row["trial"] == run.data.tags["lensearch.trial_id"]
        assert row["val_psnr"] == value and row["epoch"] == step
        ssim = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "val_ssim")}
        assert row["val_ssim"] == ssim[step]
        assert row["params"] == run.data.metrics["params"]
        # test scores of the best checkpoint are real numbers near its val score (same model, same data kind)
        assert abs(row["test_psnr"] - row["val_psnr"]) < 5.0
        assert 0 < row["test_ssim_skimage"] <= 1 and row["test_ssim_skimage"] != row["test_ssim"]
    overall = max(row["val_psnr"] for row in board.values())
    assert overall == pytest.approx(parent.data.metrics["best_val_psnr"])
    assert search["reference"]["bicubic_val_psnr"] == parent.data.metrics["bicubic_val_psnr"]
    assert search["reference"]["noise_ceiling_val_psnr"] == parent.data.metrics["noise_ceiling_val_psnr"]
    for text in (html, md):
        assert "bicubic" in text and "noise ceiling" in text
        assert f"{parent.data.metrics['bicubic_val_psnr']:.4f}" in text
        for row in board.values():
            assert f"{row['val_psnr']:.4f}" in text

    # the physics table has every method, both SSIM conventions, and the flux error is finite
    phys = search["physics"]
    assert set(phys) == {"bicubic", "span", "espcn"}
    for values in phys.values():
        assert np.isfinite(values["flux_error"]) and values["ssim"] != values["ssim_skimage"]
    assert "Gaussian 11/1.5" in html and "skimage 7x7" in html


@pytest.mark.ray
def test_bad_input_is_one_line_and_exit_2(report_search, tmp_path, capsys):
    outcome = report_search
    store = outcome.search_dir.parents[1]
    cases = [
        (["report", "no-such-search", "--out", str(tmp_path / "r"), "--store", str(store)], "unknown search"),
        (["report", str(outcome.search_dir), "--out", str(tmp_path / "r2"), "--store", str(store),
          "--data", str(tmp_path / "missing.h5")], "missing.h5: no such file"),
    ]
    full = tmp_path / "full"
    full.mkdir()
    (full / "x.txt").write_text("keep me")
    cases.append((["report", str(outcome.search_dir), "--out", str(full), "--store", str(store)],
                  "exists and is not empty"))
    for argv, message in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("lensearch report: error:") and message in err[0], err
    assert (full / "x.txt").read_text() == "keep me"
    assert not (tmp_path / "r").exists() and not (tmp_path / "r2").exists()
