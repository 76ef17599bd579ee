"""The search objective ``val_downstream_auc``: a frozen classifier, trained once per data file on HR, scores
every trial's SR validation images.

Checked against an independent computation: the same classifier applied to the checkpoint's SR images through
``lensearch.downstream`` (``predict`` + ``classification_metrics``, whose AUC uses scipy's ranks), on the same
validation images. The end-to-end search runs its trials with 2 DDP workers, so the reported AUC also shows
that the probabilities of both ranks were gathered.
"""

from __future__ import annotations


import numpy as np
import pytest
import torch
import yaml

from lensearch.cli import main
from lensearch.data.store import iter_batches, open_h5
from lensearch.data.transforms import build_normalization
from lensearch.downstream.metrics import classification_metrics
from lensearch.downstream.tasks import plan_tasks
from lensearch.downstream.train import Trained, predict
from lensearch.models.raw import RawImageSR, load_network
from lensearch.search.schema import load_search
from lensearch.search.leaderboard import leaderboard
from lensearch.search.tuner import SearchOptions, run_search
from lensearch.training.checkpoint import load_checkpoint
from lensearch.training.config import resolve_run_config
from lensearch.training.context import RunContext
from lensearch.training.frozen_classifier import (ensure_classifier, load_classifier, macro_auc, reference_aucs)
from lensearch.training.loop import fit
from lensearch.training.runner import prepare_data

EPOCHS = 6  # the classifier's: enough to leave chance on lens finding, not needed for the equalities


@pytest.fixture(scope="module")
def nl_h5(tmp_path_factory):
    """160 tiny images, every 4th a non-lens, 60/20/20 split (32 val images: both classes)."""
    from lensearch.data.simulate import simulate_to_h5

    path = tmp_path_factory.mktemp("dsobj") / "nonlens.h5"
    simulate_to_h5(path, "tiny", 160, 3, workers=1, include_non_lens=True, split_fractions=(0.6, 0.2, 0.2))
    return path


@pytest.fixture(scope="module")
def classifier(nl_h5, tmp_path_factory):
    return ensure_classifier(nl_h5, {"epochs": EPOCHS}, tmp_path_factory.mktemp("store") / "classifiers")


def _independent_auc(entry, data_path, images, max_images=0) -> float:
    """The frozen net through lensearch.downstream's predict and metrics, on the file's val labels."""
    info = open_h5(data_path)
    (task,), _ = plan_tasks(info, entry["task"])
    net, _, _ = load_classifier(entry["path"])
    label = np.concatenate([b["label"] for b in iter_batches(data_path, "val", 256, ("label",),
                                                             max_images=max_images or None)])
    keep = np.isin(label, list(task.class_of_label))
    y = np.array([task.class_of_label[int(v)] for v in label[keep]])
    probs = predict(Trained(net, task, None), np.asarray(images)[keep])
    return classification_metrics(probs, y, task.classes)["auc_macro"]


def _sr_val_images(ckpt_path, data_path, max_images=0) -> np.ndarray:
    ckpt = load_checkpoint(ckpt_path)
    model = RawImageSR(load_network(ckpt), build_normalization(ckpt["normalization"])).eval()
    lr = np.concatenate([b["lr"] for b in iter_batches(data_path, "val", 256, ("lr",),
                                                       max_images=max_images or None)])
    with torch.no_grad():
        return model(torch.from_numpy(lr.astype(np.float32))).numpy()


def test_macro_auc_matches_lensearch_downstream_metrics_with_ties():
    rng = np.random.default_rng(0)
    for k in (2, 3):
        probs = np.round(rng.dirichlet(np.ones(k), 50), 1)  # many ties
        y = rng.integers(0, k, 50)
        assert macro_auc(probs, y) == pytest.approx(classification_metrics(probs, y, list("abc"[:k]))["auc_macro"])
    assert np.isnan(macro_auc(np.full((5, 2), 0.5), np.zeros(5, int)))


def test_classifier_is_cached_by_file_and_settings(nl_h5, classifier, tmp_path):
    cache = classifier["path"].rsplit("/", 1)[0]
    assert classifier["task"] == "find" and classifier["classes"] == ["lens", "non_lens"]  # auto: the file has non_lens
    again = ensure_classifier(nl_h5, {"epochs": EPOCHS}, cache)
    assert again == {**classifier, "trained": False}
    copy = tmp_path / "copy.h5"  # same bytes elsewhere: the same key
    copy.write_bytes(nl_h5.read_bytes())
    assert ensure_classifier(copy, {"epochs": EPOCHS}, cache)["path"].split("-")[-1] == \
        classifier["path"].split("-")[-1]
    # the reference: the same classifier on the HR validation images (and on bicubic ones)
    ref = reference_aucs(classifier, str(nl_h5))
    assert set(ref) == {"hr_val_downstream_auc", "bicubic_val_downstream_auc"}
    hr = np.concatenate([b["hr"] for b in iter_batches(nl_h5, "val", 256, ("hr",))])
    assert ref["hr_val_downstream_auc"] == pytest.approx(_independent_auc(classifier, nl_h5, hr), abs=1e-9)


def test_loop_reports_the_auc_of_its_sr_images(nl_h5, classifier, tmp_path):
    """Every epoch carries val_downstream_auc, and it is the classifier's AUC on the SR images of exactly the
    scored validation images (val_max_images of them), recomputed independently from the checkpoint."""
    config = resolve_run_config({"model": {"name": "espcn", "num_features": 8, "num_layers": 3},
                                 "normalization": {"name": "asinh", "softening": 0.3},
                                 "train": {"epochs": 2, "steps_per_epoch": 3, "batch_size": 8,
                                           "val_max_images": 24, "monitor": "val_downstream_auc"}})
    run = prepare_data({"path": str(nl_h5)}, tmp_path, progress=False).replace(dir=str(tmp_path / "run"),
                                                                               downstream=classifier)
    reports = []
    fit(config, run, RunContext(device=torch.device("cpu"), report_fn=reports.append))
    assert [r["epoch"] for r in reports] == [1, 2]
    assert all(0.0 <= r["val_downstream_auc"] <= 1.0 for r in reports)
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    sr = _sr_val_images(last, nl_h5, max_images=24)
    expected = _independent_auc(classifier, nl_h5, sr, max_images=24)
    assert reports[-1]["val_downstream_auc"] == pytest.approx(expected, abs=1e-6)


@pytest.mark.ray
def test_search_with_the_downstream_objective_runs_end_to_end(ray_cluster, nl_h5, tmp_path):
    """PSNR + downstream AUC, 2 trials of 2 DDP workers: both objectives in every trial's best row, the
    reference holds the classifier's HR and bicubic AUCs, the leaderboard shows them, and a trial's reported
    AUC equals the independent computation on its best checkpoint (so both ranks' images were gathered)."""
    doc = {"name": "dsobj", "data": {"path": str(nl_h5)},
           "objective": [{"metric": "val_psnr", "mode": "max"}, {"metric": "val_downstream_auc", "mode": "max"}],
           "budget": {"num_samples": 2, "max_epochs": 2}, "early_stopping": {"name": "none"},
           "searcher": {"name": "random", "seed": 0}, "resources": {"workers": 2},
           "downstream": {"task": "find", "epochs": EPOCHS},
           "space": {"model": {"choice": {"espcn": {"num_features": 8, "num_layers": {"int": [3, 4]}}}},
                     "optimizer": {"choice": {"adam": {"lr": {"logfloat": [5e-4, 3e-3]}}}},
                     "train": {"batch_size": 8, "steps_per_epoch": 3}}}
    path = tmp_path / "dsobj.yaml"
    path.write_text(yaml.safe_dump(doc))
    outcome = run_search(load_search(path), SearchOptions(store=tmp_path / "mlruns", root=tmp_path, quiet=True))
    assert len(outcome.rows) == 2 and all(r.state == "completed" for r in outcome.rows), \
        [r.state for r in outcome.rows]
    assert {"hr_val_downstream_auc", "bicubic_val_downstream_auc", "bicubic_val_psnr"} <= set(outcome.reference)
    assert all({"val_psnr", "val_downstream_auc"} <= set(r.best) for r in outcome.rows)
    board = leaderboard(outcome)
    assert "downstr. AUC" in board and "val_downstream_auc of the frozen classifier: HR" in board
    # the classifier was trained once, into the store
    assert len(list((tmp_path / "mlruns" / "classifiers").glob("*.pt"))) == 1
    row = outcome.rows[0]
    last = load_checkpoint(row.checkpoint.replace("best.pt", "last.pt"))  # epoch 2 (the last report)
    entry = ensure_classifier(nl_h5, {"task": "find", "epochs": EPOCHS}, tmp_path / "mlruns" / "classifiers")
    assert entry["trained"] is False
    sr = _sr_val_images(row.checkpoint.replace("best.pt", "last.pt"), nl_h5)
    assert last["metrics"]["val_downstream_auc"] == pytest.approx(_independent_auc(entry, nl_h5, sr), abs=1e-6)
    # the report shows the science next to the pixels: the trial's AUC, and the classifier on bicubic and on HR
    import json

    from lensearch.cli import main

    out = tmp_path / "report"
    assert main(["report", str(outcome.search_dir), "--out", str(out), "--store", str(tmp_path / "mlruns"),
                 "--json"]) == 0
    (search,) = json.loads((out / "report.json").read_text())["searches"]
    (entry,) = search["leaderboard"]   # one architecture: its best trial by val_psnr
    best = outcome.best()
    assert entry["trial"] == best.trial_id
    assert entry["val_downstream_auc"] == pytest.approx(best.best["val_downstream_auc"])
    md = (out / "report.md").read_text()
    assert "val_downstream_auc" in md and "its AUC on HR" in md
    assert search["reference"]["hr_val_downstream_auc"] == pytest.approx(outcome.reference["hr_val_downstream_auc"])


@pytest.mark.ray
def test_the_metric_on_a_file_without_the_labels_is_one_line_exit_2(ray_cluster, tiny_h5, tmp_path, capsys):
    from lensearch.data.simulate import simulate_to_h5

    one_class = tmp_path / "one_class.h5"
    simulate_to_h5(one_class, "tiny", 32, 0, workers=1, classes="no_sub")
    base = {"name": "bad", "objective": {"metric": "val_downstream_auc", "mode": "max"},
            "budget": {"num_samples": 2, "max_epochs": 1},
            "space": {"model": {"choice": {"espcn": {"num_features": 8}}}}}
    cases = [(one_class, {}, "needs class labels for classify"),       # auto: no non_lens, one class
             (tiny_h5, {"downstream": {"task": "find"}}, "needs class labels for find")]  # no non_lens
    for data, extra, text in cases:
        path = tmp_path / "bad.yaml"
        path.write_text(yaml.safe_dump({**base, "data": {"path": str(data)}, **extra}))
        assert main(["tune", str(path), "--store", str(tmp_path / "mlruns"), "--quiet"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and text in err[0] and str(path) in err[0], err
    path.write_text(yaml.safe_dump({**base, "downstream": {"task": "regress"}}))
    assert main(["tune", str(path), "--quiet"]) == 2
    assert "downstream.task: expected one of auto, find, classify" in capsys.readouterr().err
