"""``lensearch export``: trial selection, TorchScript/ONNX parity, the card, MLflow Model Registry, bad input.

One real tiny search (Ray Tune + Train, 2 single-worker trials of 1 epoch) serves the end-to-end checks;
everything else runs on hand-written search directories (:func:`helpers.fake_search`), without Ray.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from helpers import RDN, fake_search, skimage_psnr  # the tests' search-directory builder, an independent PSNR

from lensearch.cli import main
from lensearch.data.store import iter_batches
from lensearch.data.transforms import build_normalization
from lensearch.export import ExportError, choose_trial, find_search, graphs, verify_parity
from lensearch.models import registry

REPO = Path(__file__).resolve().parents[2]


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) >= 1
    return err[-1]


# ------------------------------------------------------------------------------------------- the real search
@pytest.fixture(scope="session")
def tiny_search(ray_cluster, tiny_h5, tmp_path_factory):
    """One real search: smoke.yaml on the tiny data, 2 single-worker trials x 1 epoch, no early stopping,
    system metrics sampled every 0.5 s."""
    from lensearch.search.schema import load_search
    from lensearch.search.tuner import SearchOptions, run_search

    root = tmp_path_factory.mktemp("export_search")
    doc = yaml.safe_load((REPO / "search_spaces" / "smoke.yaml").read_text())
    doc.update(name="exp", data={"path": str(tiny_h5)}, resources={"workers": 1},
               budget={"num_samples": 2, "max_epochs": 1}, early_stopping={"name": "none"})
    path = root / "exp.yaml"
    path.write_text(yaml.safe_dump(doc))
    outcome = run_search(load_search(path), SearchOptions(store=root / "mlruns", root=root, quiet=True,
                                                          system_metrics=0.5))
    assert [r.state for r in outcome.rows] == ["completed", "completed"]
    return outcome


@pytest.mark.ray
def test_export_of_a_real_search_is_verified_self_contained_and_registered(tiny_search, tiny_h5, tmp_path, capsys):
    from mlflow.tracking import MlflowClient

    store, best = tiny_search.search_dir.parent.parent, tiny_search.best()
    out = tmp_path / "model"
    assert main(["export", "exp", "--store", str(store), "--out", str(out)]) == 0
    assert f"exported trial {best.trial_id}" in capsys.readouterr().out
    man = json.loads((out / "export.json").read_text())
    src = man["source"]
    assert (src["trial_id"], src["run_id"], src["parent_run_id"]) == (best.trial_id, best.run_id,
                                                                      tiny_search.parent_run_id)
    assert "best val_psnr (max) of 2 finished trial(s)" in src["selection"]
    for name in ("model.ts", "model.onnx", "state_dict.pt", "config.yaml", "normalization.json", "MODEL_CARD.md"):
        assert (out / name).is_file(), name
    for backend in ("torchscript", "onnx"):
        check = man["verification"][backend]
        assert check["max_abs_error"] <= check["tolerance"] and check["inputs"] == 3
    # Same weights, same images, same metric code: the recomputed val PSNR is the training-time one.
    val, test = man["metrics"]["val"], man["metrics"]["test"]
    assert val["model"]["psnr"] == pytest.approx(best.best["val_psnr"], rel=1e-4)
    assert {"psnr_clean", "ssim_clean", "mse_clean"} <= set(test["model"]) and test["noise_ceiling"]
    split = next(iter_batches(man["data"]["path"], "test", 64, ("lr", "hr")))
    lr_t = torch.from_numpy(split["lr"])
    bic = torch.nn.functional.interpolate(lr_t, scale_factor=2, mode="bicubic", align_corners=False).numpy()
    sr = torch.jit.load(str(out / "model.ts"))(lr_t).detach().numpy()
    assert test["n"] == len(split["hr"]) == 13
    assert test["bicubic"]["psnr"] == pytest.approx(skimage_psnr(bic, split["hr"]), abs=1e-3)
    assert test["model"]["psnr"] == pytest.approx(skimage_psnr(sr, split["hr"]), abs=1e-3)

    # The folder alone rebuilds the model: state dict + normalization.json reproduce the TorchScript graph.
    net = registry.build(man["model"]["name"], scale=2, **man["model"]["params"]).eval()
    net.load_state_dict(torch.load(out / "state_dict.pt"))
    norm = build_normalization(json.loads((out / "normalization.json").read_text()))
    lr = torch.from_numpy(next(iter_batches(man["data"]["path"], "test", 4, ("lr",)))["lr"])
    with torch.no_grad():
        want = norm.invert(net(norm.apply(lr, lr)), lr)
        torch.testing.assert_close(torch.jit.load(str(out / "model.ts"))(lr), want)
    assert yaml.safe_load((out / "config.yaml").read_text())["model"]["name"] == man["model"]["name"]

    card = (out / "MODEL_CARD.md").read_text()
    for text in ("## Quality", "bicubic PSNR", "ceiling PSNR", "hr_clean", "parameters", "FLOPs", "latency",
                 best.trial_id, best.run_id, tiny_search.parent_run_id, str(tiny_search.search_dir),
                 "ONNX opset 18", "`lensearch-exp` version 1"):
        assert text in card, text

    client = MlflowClient(tiny_search.tracking_uri)
    v1 = client.get_model_version("lensearch-exp", "1")
    assert v1.description.startswith("# ") and v1.tags["trial_id"] == best.trial_id
    run = client.get_run(v1.run_id)
    assert run.data.metrics["test_psnr"] == pytest.approx(test["model"]["psnr"])
    assert run.data.metrics["test_bicubic_psnr"] == pytest.approx(test["bicubic"]["psnr"])
    assert run.data.tags["lensearch.search_run_id"] == tiny_search.parent_run_id
    registered_files = {a.path for a in client.list_artifacts(v1.run_id, "model")}
    assert {"model/MODEL_CARD.md", "model/export.json", "model/model.onnx"} <= registered_files
    # In the UI the export sits under its search, in an experiment tagged as ML training (not GenAI).
    assert run.data.tags["mlflow.parentRunId"] == tiny_search.parent_run_id
    assert client.get_experiment(run.info.experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"
    from lensearch.search.tracking import quick_digest

    # Each trial recorded its data file as train and val input, with one digest.
    trial_inputs = client.get_run(best.run_id).inputs.dataset_inputs
    assert sorted((i.dataset.name, i.dataset.digest, i.tags[0].value) for i in trial_inputs) == [
        ("tiny/train", quick_digest(tiny_h5), "train"), ("tiny/val", quick_digest(tiny_h5), "val")]
    assert str(tiny_h5) in trial_inputs[0].dataset.source
    # --system-metrics: sampled into every trial's run, beside the per-epoch metrics.
    for row in tiny_search.rows:
        sampled = client.get_run(row.run_id).data.metrics
        assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= set(sampled), row
        assert 0 <= sampled["system/cpu_utilization_percentage"] <= 100 * 64

    # The registered model loads through MLflow itself, by alias, and upscales a batch like the export's graph.
    import mlflow.pyfunc

    assert str(client.get_model_version_by_alias("lensearch-exp", "champion").version) == "1"
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(tiny_search.tracking_uri)
    try:
        model = mlflow.pyfunc.load_model("models:/lensearch-exp@champion")
    finally:
        mlflow.set_tracking_uri(previous)
    sig = model.metadata.signature
    assert sig.inputs.to_dict()[0]["tensor-spec"] == {"dtype": "float32", "shape": (-1, 1, -1, -1)}
    assert model.metadata.get_input_schema() is not None and (model.metadata.saved_input_example_info or {})
    batch = split["lr"][:3]
    got = model.predict(batch)
    assert got.shape == (3, 1, 2 * batch.shape[2], 2 * batch.shape[3]) and got.dtype == np.float32
    np.testing.assert_allclose(got, sr[:3], rtol=0, atol=1e-5)

    # Again, naming the search by its MLflow parent run id: a new version of the same registered model.
    assert main(["export", tiny_search.parent_run_id, "--store", str(store), "--out", str(tmp_path / "m2")]) == 0
    assert json.loads((tmp_path / "m2" / "export.json").read_text())["registered"]["version"] == 2
    assert len(client.search_model_versions("name = 'lensearch-exp'")) == 2
    assert str(client.get_model_version_by_alias("lensearch-exp", "champion").version) == "2"  # the newest export


# ------------------------------------------------------------------------------------------- verification
def test_verify_parity_reports_error_and_tolerance():
    want = [np.linspace(0, 10, 64, dtype=np.float32).reshape(1, 1, 8, 8)]
    ok = verify_parity("ONNX", [want[0] + 1e-4], want)
    assert ok["max_abs_error"] == pytest.approx(1e-4, rel=1e-2) and ok["tolerance"] == pytest.approx(1e-3)
    with pytest.raises(ExportError, match=r"TorchScript output differs from PyTorch on validation input "
                                          r"\(1, 1, 8, 8\): max abs error 5\.000e-03 > tolerance 1\.000e-03"):
        verify_parity("TorchScript", [want[0] + 5e-3], want)


def test_a_perturbed_onnx_graph_fails_the_export_with_numbers(tiny_h5, tmp_path, capsys, monkeypatch):
    fake_search(tmp_path / "mlruns", "p", {"t1": ("rdn", RDN, "minmax", {"val_psnr": 30.0})}, tiny_h5)
    real = graphs.export_onnx

    def tampered(model, example, path):
        run = real(model, example, path)
        return lambda x: run(x) * 1.01
    monkeypatch.setattr(graphs, "export_onnx", tampered)
    out = tmp_path / "model"
    assert main(["export", "p", "--store", str(tmp_path / "mlruns"), "--out", str(out), "--no-register"]) == 1
    line = _error_line(capsys)
    assert line.startswith("lensearch export: failed: ONNX output differs from PyTorch") and "> tolerance" in line
    assert not out.exists() and not list(tmp_path.glob(".model*"))  # nothing half-written


# ------------------------------------------------------------------------------------------- selection
def test_multi_objective_selection_reports_the_pareto_front(tiny_h5, tmp_path):
    metrics = {"a": {"val_psnr": 30.0, "params": 100.0}, "b": {"val_psnr": 28.0, "params": 50.0},
               "c": {"val_psnr": 27.0, "params": 200.0}, "d": {"val_psnr": 29.0, "params": 50.0}}
    fake_search(tmp_path, "mo", {k: ("bicubic", {}, "minmax", m) for k, m in metrics.items()}, tiny_h5,
                objective=[{"metric": "val_psnr", "mode": "max"}, {"metric": "params", "mode": "min"}],
                epochs={"d": 1})  # d (dominating b) was stopped after 1 of 2 epochs: not comparable
    ref = find_search("mo", store=tmp_path)
    choice = choose_trial(ref)
    assert choice.trial_id == "a"
    assert "Pareto front: a, b;" in choice.reason and "best by the first objective" in choice.reason
    assert choose_trial(ref, trial="b").trial_id == "b"
    assert choose_trial(ref, metric="params").trial_id == "b"          # direction known: cost metrics -> min
    assert choose_trial(ref, metric="val_psnr", mode="min").trial_id == "c"


def test_export_notes_skip_onnx_and_say_why(tiny_h5, tmp_path, capsys, monkeypatch):
    spec = dataclasses.replace(registry.get("rdn"), export_notes="ONNX: not supported in this test")
    monkeypatch.setitem(registry.MODELS._specs, "rdn", spec)
    fake_search(tmp_path / "mlruns", "n", {"t1": ("rdn", RDN, "minmax", {"val_psnr": 30.0})}, tiny_h5)
    out = tmp_path / "model"
    assert main(["export", "n", "--store", str(tmp_path / "mlruns"), "--out", str(out), "--no-register"]) == 0
    captured = capsys.readouterr()
    assert "ONNX skipped for rdn: ONNX: not supported in this test" in captured.err
    assert (out / "model.ts").exists() and not (out / "model.onnx").exists()
    assert "skipped: ONNX: not supported in this test" in (out / "MODEL_CARD.md").read_text()
    np.save(tmp_path / "x.npy", np.ones((8, 8), np.float32))
    assert main(["upscale", str(out), str(tmp_path / "x.npy"), "--backend", "onnx"]) == 2
    assert "this export has no onnx model (ONNX: not supported in this test)" in _error_line(capsys)


# ------------------------------------------------------------------------------------------- bad input
def test_bad_input_is_one_line_and_exit_2(tiny_h5, tmp_path, capsys):
    store = tmp_path / "mlruns"
    fake_search(store, "ok", {"t1": ("bicubic", {}, "minmax", {"val_psnr": 30.0})}, tiny_h5)
    (store / "searches" / "empty-20250101-000000" / "trials").mkdir(parents=True)
    moved = fake_search(tmp_path / "other", "moved", {"t1": ("bicubic", {}, "minmax", {"val_psnr": 1.0})},
                        tmp_path / "gone.h5")
    (moved / "trials" / "t2" / "checkpoints").mkdir(parents=True)
    (moved / "trials" / "t2" / "checkpoints" / "best.pt").write_bytes(b"not a checkpoint")
    cases = {
        ("nosuch",): "unknown search 'nosuch': not a directory, not a search name under",
        ("0123456789abcdef0123456789abcdef",): "unknown search '0123456789abcdef0123456789abcdef': no such MLflow run",
        ("empty",): "no finished trial",
        ("ok", "--trial", "zz"): "--trial zz: no finished trial with that id",
        ("ok", "--metric", "val_nope"): "--metric val_nope: no known direction",
        ("ok", "--metric", "val_ssim"): "--metric val_ssim: not reported by any finished trial",
        (str(tmp_path),): "not a search directory",
        (str(moved),): "t2/checkpoints/best.pt: unreadable checkpoint",
    }
    for args, message in cases.items():
        assert main(["export", *args, "--store", str(store), "--out", str(tmp_path / "o"), "--no-register"]) == 2
        line = _error_line(capsys)
        assert line.startswith("lensearch export: error: ") and message in line, (args, line)
    (moved / "trials" / "t2" / "checkpoints" / "best.pt").unlink()
    assert main(["export", str(moved), "--out", str(tmp_path / "o"), "--no-register"]) == 2
    assert "gone.h5) is missing; pass --data FILE.h5" in _error_line(capsys)
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "keep.txt").write_text("x")
    assert main(["export", "ok", "--store", str(store), "--out", str(tmp_path / "o"), "--no-register"]) == 2
    assert "exists and is not empty (use --overwrite" in _error_line(capsys)
    assert main(["export", "ok", "--store", str(store), "--out", str(tmp_path / "o"), "--no-register",
                 "--overwrite"]) == 2
    assert "--overwrite replaces only an earlier export folder (one with export.json)" in _error_line(capsys)
    assert (tmp_path / "o" / "keep.txt").exists()
