"""``lensearch downstream``: metrics on cases with a known answer, the bootstrap, the networks, one end-to-end
run with a real SR export (MLflow included), the feature network for the content loss, and bad input.

The SR export is a ``bicubic`` model exported without Ray (:func:`helpers.fake_search` + ``export_search``):
its SR images are bicubic ones, so its table row must equal the bicubic row.
"""

from __future__ import annotations

import json
import shutil
from itertools import combinations

import numpy as np
import pytest
import torch
from helpers import fake_search  # the tests' search-directory builder

from lensearch.cli import main
from lensearch.downstream import DownstreamOptions, run_downstream
from lensearch.downstream.bootstrap import bootstrap, draw, intervals, paired_comparison
from lensearch.downstream.metrics import (classification_metrics, confusion_matrix, regression_metrics, roc_auc,
                                          roc_curve)
from lensearch.downstream.nets import unit_scale_images
from lensearch.downstream.tasks import Task, load_data, plan_tasks
from lensearch.downstream.train import augment_batch, predict, train_task
from lensearch.downstream.variants import bicubic_images, load_exports, sr_images
from lensearch.export import export_search
from lensearch.models.feature_net import load_feature_net

TRIAL_RUN = "a" * 32


# ------------------------------------------------------------------------------------------- metrics
def _pairwise_auc(scores, positive) -> float:
    """Reference AUC by counting every (positive, negative) pair: 1 if ordered right, 1/2 if tied."""
    pos, neg = scores[positive], scores[~positive]
    return float(np.mean([(p > n) + 0.5 * (p == n) for p in pos for n in neg]))


def test_perfect_predictions_score_one_and_constant_scores_auc_one_half():
    y = np.array([0, 1, 2, 2, 1, 0, 2])
    perfect = np.eye(3)[y] * 0.9 + 0.1 / 3
    m = classification_metrics(perfect, y, ["a", "b", "c"])
    for key in ("accuracy", "precision_macro", "recall_macro", "f1_macro", "auc_macro", "auc_a", "auc_b", "auc_c"):
        assert m[key] == pytest.approx(1.0), key
    constant = np.full((len(y), 3), 1 / 3)
    m = classification_metrics(constant, y, ["a", "b", "c"])
    assert [m[f"auc_{c}"] for c in "abc"] == [0.5, 0.5, 0.5]
    # argmax of a constant row is class 0: accuracy = share of class 0, recall (1, 0, 0), precision (2/7, 0, 0)
    assert m["accuracy"] == pytest.approx(2 / 7)
    assert m["recall_macro"] == pytest.approx(1 / 3)
    assert m["precision_macro"] == pytest.approx(2 / 21)


def test_auc_and_roc_curve_match_a_pairwise_reference_with_ties():
    rng = np.random.default_rng(0)
    scores = np.round(rng.random(60), 1)  # many ties
    positive = rng.random(60) < 0.4
    assert roc_auc(scores, positive) == pytest.approx(_pairwise_auc(scores, positive))
    fpr, tpr = roc_curve(scores, positive)
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0, 0, 1, 1)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    assert np.trapezoid(tpr, fpr) == pytest.approx(roc_auc(scores, positive))  # ties = straight segments
    assert np.isnan(roc_auc(scores, np.zeros(60, bool)))


def test_confusion_matrix_and_regression_metrics_on_known_errors():
    cm = confusion_matrix(np.array([0, 0, 1, 2, 2]), np.array([0, 1, 1, 2, 0]), 3)
    assert cm.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 1]]
    true = np.array([[1.0, 0.1], [1.2, -0.1], [0.9, 0.0], [1.5, 0.2]])
    err = np.array([[0.3, 1.0], [0.3, -1.0], [0.3, 1.0], [0.3, -1.0]])
    m = regression_metrics(true + err, true, ["theta_E", "e1"])
    assert (m["bias_theta_E"], m["mae_theta_E"], m["rmse_theta_E"]) == pytest.approx((0.3, 0.3, 0.3))
    assert (m["bias_e1"], m["mae_e1"], m["rmse_e1"]) == pytest.approx((0.0, 1.0, 1.0))


def test_bootstrap_interval_contains_the_estimate_narrows_with_more_images_and_is_seeded():
    rng = np.random.default_rng(1)
    widths = {}
    for n in (50, 800):
        x = rng.normal(2.0, 1.0, n)
        ci = bootstrap(lambda idx: {"mean": float(x[idx].mean())}, n, 500, seed=3)["mean"]
        assert ci["value"] == pytest.approx(x.mean())
        assert ci["lo"] < ci["value"] < ci["hi"]
        widths[n] = ci["hi"] - ci["lo"]
        # the textbook interval: +-1.96 standard errors
        assert widths[n] == pytest.approx(2 * 1.96 * x.std() / np.sqrt(n), rel=0.2)
        assert bootstrap(lambda idx: {"mean": float(x[idx].mean())}, n, 500, seed=3)["mean"] == ci
    assert widths[800] < 0.4 * widths[50]  # ~ 1/sqrt(16) = 0.25


def test_paired_comparison_uses_the_same_draws_for_every_version():
    """SR = bicubic + 0.3 on every image and HR = bicubic + 1.2: the paired difference is exactly 0.3 in every
    draw (a zero-width interval, although each version's own interval is wide) and the recovered share 1/4."""
    rng = np.random.default_rng(2)
    base = rng.normal(0.0, 1.0, 60)

    def drawn(x):
        return draw(lambda idx: {"mean": float(x[idx].mean())}, len(x), 300, seed=5)

    sr, bic, hr = drawn(base + 0.3), drawn(base), drawn(base + 1.2)
    own = intervals(*sr)["mean"]
    assert own["hi"] - own["lo"] > 0.3  # unpaired, the difference would be lost in the spread
    cmp = paired_comparison(sr, bic, hr)["mean"]
    assert cmp["vs_bicubic"] == pytest.approx({"value": 0.3, "lo": 0.3, "hi": 0.3})
    assert cmp["recovered"] == pytest.approx({"value": 0.25, "lo": 0.25, "hi": 0.25})
    assert intervals(*bic) == bootstrap(lambda idx: {"mean": float(base[idx].mean())}, 60, 300, seed=5)
    same = paired_comparison(bic, bic, bic)["mean"]  # HR = bicubic: nothing to recover
    assert same["vs_bicubic"]["value"] == 0 and np.isnan(same["recovered"]["value"])
    assert np.isnan(same["recovered"]["lo"])


# ------------------------------------------------------------------------------------------- training
def test_augmentation_transforms_spin2_targets_with_the_image():
    """Undo each augmentation by finding which of the 8 flips/rotations it was, then check the targets: a
    90-degree rotation negates (e1, e2) and (gamma1, gamma2), a mirror flip negates e2 and gamma2."""
    task = Task("regress", "regression", "r", targets=["theta_E", "e1", "e2", "gamma1", "gamma2"])
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    y = torch.tensor([[1.0, 0.2, 0.3, 0.04, 0.05]])
    seen = set()
    for seed in range(40):
        xa, ya = augment_batch(x, y, task, np.random.default_rng(seed))
        candidates = {(k, m): torch.flip(torch.rot90(x, k, (2, 3)), (3,)) if m else torch.rot90(x, k, (2, 3))
                      for k in range(4) for m in (False, True)}
        (k, mirror), = [key for key, image in candidates.items() if torch.equal(xa, image)]
        seen.add((k, mirror))
        s_rot, s_flip = (-1.0) ** k, -1.0 if mirror else 1.0
        assert ya[0].tolist() == pytest.approx([1.0, 0.2 * s_rot, 0.3 * s_rot * s_flip, 0.04 * s_rot,
                                                0.05 * s_rot * s_flip])
    assert len(seen) == 8


@pytest.fixture(scope="module")
def non_lens_h5(tmp_path_factory):
    """192 tiny images with non_lens (every 4th image), 60/10/30 split: 115 train, 58 test."""
    from lensearch.data.simulate import simulate_to_h5

    path = tmp_path_factory.mktemp("downstream_data") / "nonlens.h5"
    simulate_to_h5(path, "tiny", 192, 3, workers=1, include_non_lens=True, split_fractions=(0.6, 0.1, 0.3))
    return path


def test_hr_trained_lens_finder_beats_chance_on_hr_test_images(non_lens_h5):
    """Lens finding is what the tiny images carry (their 0.1" pixels cannot show 1e7-1e10 Msun subhalos, so
    the substructure classifier stays near chance there): chance is AUC 0.5 and balanced accuracy 0.5."""
    data = load_data(non_lens_h5)
    (task,), notes = plan_tasks(data.info, "find")
    assert task.classes == ["lens", "non_lens"] and not notes
    rows, y = task.select(data.splits["train"])
    val_rows, y_val = task.select(data.splits["val"])
    test_rows, y_test = task.select(data.splits["test"])
    assert set(np.unique(y_test)) == {0, 1}
    trained = train_task(task, data.splits["train"].hr[rows], y, data.splits["val"].hr[val_rows], y_val,
                         epochs=12, seed=0)
    m = classification_metrics(predict(trained, data.splits["test"].hr[test_rows]), y_test, task.classes)
    assert m["auc_macro"] > 0.9
    assert m["recall_macro"] > 0.8  # balanced accuracy


def test_tasks_follow_the_file(tiny_h5, non_lens_h5):
    from lensearch.data.store import open_h5

    tasks, notes = plan_tasks(open_h5(tiny_h5))
    assert [t.name for t in tasks] == ["classify", "regress"]
    assert len(notes) == 1 and notes[0].startswith("skipped find:") and "non_lens" in notes[0]
    tasks, notes = plan_tasks(open_h5(non_lens_h5))
    assert [t.name for t in tasks] == ["classify", "find", "regress"] and not notes
    classify, regress = tasks[0], tasks[2]
    assert classify.classes == ["no_sub", "cdm", "vortex"]
    assert regress.targets == ["theta_E", "e1", "e2", "gamma1", "gamma2"]
    split = load_data(non_lens_h5).splits["test"]
    rows, y = regress.select(split)
    assert len(rows) == np.sum(split.label != 3) and np.all(y[:, 0] >= 0.8)  # non-lenses (theta_E 0) excluded


# ------------------------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def exports(tmp_path_factory, tiny_h5):
    """Two export folders of the exact-bicubic model; the second's manifest records an MLflow trial run."""
    root = tmp_path_factory.mktemp("downstream_export")
    search_dir = fake_search(root, "bic", {"t1": ("bicubic", {}, "minmax", {"val_psnr": 30.0})}, tiny_h5)
    export_search(str(search_dir), root / "bic", store=root, register=False, log=lambda text: None)
    shutil.copytree(root / "bic", root / "tagged")
    manifest = json.loads((root / "tagged" / "export.json").read_text())
    manifest["source"]["run_id"] = TRIAL_RUN
    (root / "tagged" / "export.json").write_text(json.dumps(manifest))
    return [root / "bic", root / "tagged"]


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_h5, exports):
    root = tmp_path_factory.mktemp("downstream_run")
    opts = DownstreamOptions(data=tiny_h5, sr=exports, out=root / "out", epochs=2, bootstrap=200,
                             store=root / "mlruns", net_config={"base_channels": 8})
    return opts, run_downstream(opts, log=lambda text: None)


def test_sr_of_a_bicubic_export_is_bicubic(tiny_h5, exports):
    data = load_data(tiny_h5)
    (export, _) = load_exports(exports, data.info)
    test = data.splits["test"]
    bic = bicubic_images(test.lr, data.info.scale)
    sr = sr_images(export, test.lr, data.info.hr_shape)
    assert sr.shape == test.hr.shape
    np.testing.assert_allclose(sr, bic, rtol=0, atol=1e-5 * float(np.abs(bic).max()))


def test_end_to_end_writes_tables_figures_and_numbers(run):
    opts, results = run
    out = opts.out
    versions = ["HR", "bicubic", "SR:bic", "SR:tagged", "LR-trained"]
    assert results["versions"] == versions
    assert list(results["tasks"]) == ["classify", "regress"]
    assert any("skipped find" in n for n in results["notes"])
    saved = json.loads((out / "downstream.json").read_text())
    for task, r in results["tasks"].items():
        for version, v in r["versions"].items():
            for key, m in v["metrics"].items():  # undefined values are null in the file
                assert saved["tasks"][task]["versions"][version]["metrics"][key]["value"] == (
                    m["value"] if np.isfinite(m["value"]) else None), (task, version, key)
    for name in ("downstream.md", "classify_roc.png", "classify_confusion.png", "regress_pred_vs_true.png",
                 "feature_net.pt"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert (out / "classify_roc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = (out / "downstream.md").read_text()
    for v in versions:
        assert table.count(f"| {v} | ") == 1 + 5, v  # the classification table + one table per target
    classify = results["tasks"]["classify"]
    n_test = classify["n_test"]
    assert sum(classify["test_class_counts"]) == n_test == len(load_data(opts.data).splits["test"])
    for task in results["tasks"].values():
        for r in task["versions"].values():
            for key, m in r["metrics"].items():
                assert not (m["lo"] > m["hi"]), key
        for key, m in task["versions"]["SR:bic"]["metrics"].items():  # SR of an exact-bicubic export = bicubic
            assert m["value"] == pytest.approx(task["versions"]["bicubic"]["metrics"][key]["value"], abs=1e-6), key
    for r in classify["versions"].values():
        assert np.sum(r["confusion"]) == n_test
    # each SR version against bicubic on paired draws: an exact-bicubic export is bicubic in every draw
    for task in results["tasks"].values():
        assert set(task["comparisons"]) == {"SR:bic", "SR:tagged"}
        for key, pair in task["comparisons"]["SR:bic"].items():
            diff = pair["vs_bicubic"]
            assert max(abs(diff["value"]), abs(diff["lo"]), abs(diff["hi"])) < 1e-6, key
    assert saved["tasks"]["classify"]["comparisons"]["SR:bic"]["accuracy"]["vs_bicubic"]["value"] == pytest.approx(0)


def test_everything_is_logged_to_mlflow_with_links_to_the_exports(run):
    from mlflow.tracking import MlflowClient

    opts, results = run
    client = MlflowClient(results["mlflow"]["tracking_uri"])
    r = client.get_run(results["mlflow"]["run_id"])
    assert client.get_experiment(r.info.experiment_id).name == "downstream"
    assert r.data.tags["lensearch.kind"] == "downstream"
    assert r.data.tags["lensearch.sr.tagged.trial_run_id"] == TRIAL_RUN
    assert "lensearch.sr.bic.trial_run_id" not in r.data.tags  # its manifest records no run
    want = results["tasks"]["classify"]["versions"]["SR:bic"]["metrics"]["accuracy"]
    assert r.data.metrics["classify/SR_bic/accuracy"] == pytest.approx(want["value"])
    assert r.data.metrics["classify/SR_bic/accuracy_lo"] == pytest.approx(want["lo"])
    paired = results["tasks"]["regress"]["comparisons"]["SR:tagged"]["rmse_theta_E"]["vs_bicubic"]
    assert r.data.metrics["regress/SR_tagged/rmse_theta_E_vs_bicubic_hi"] == pytest.approx(paired["hi"])
    assert r.data.params["epochs"] == "2"
    artifacts = {a.path for a in client.list_artifacts(r.info.run_id)}
    assert {"downstream.json", "downstream.md", "classify_roc.png", "feature_net.pt"} <= artifacts


def test_feature_net_is_the_hr_classifier_and_drives_the_content_loss(run):
    from lensearch.training.losses import build_generator_loss

    opts, results = run
    net = load_feature_net(opts.out / "feature_net.pt")
    assert (net.config["num_classes"], net.config["in_channels"], net.config["base_channels"]) == (3, 1, 8)
    test = load_data(opts.data).splits["test"]
    with torch.no_grad():
        logits = net.eval()(unit_scale_images(test.hr))[1].numpy()
    want = results["tasks"]["classify"]["versions"]["HR"]["metrics"]["accuracy"]["value"]
    assert np.mean(logits.argmax(1) == test.label) == pytest.approx(want)
    loss = build_generator_loss({"content_weight": 1.0, "content_weights": str(opts.out / "feature_net.pt")})
    hr = torch.from_numpy(test.hr[:4])
    assert float(loss(hr, hr)[0]) == pytest.approx(0.0, abs=1e-7)
    assert float(loss(hr.flip(-1), hr)[1]["content"]) > 0


# ------------------------------------------------------------------------------------------- bad input
def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_bad_input_is_one_line_and_exit_2(tiny_h5, exports, tmp_path, capsys):
    out = ["--out", str(tmp_path / "out"), "--no-track"]
    assert main(["downstream", str(tmp_path / "nope.h5"), *out]) == 2
    assert "nope.h5: no such file" in _error_line(capsys)
    (tmp_path / "empty").mkdir()
    assert main(["downstream", str(tiny_h5), "--sr", str(tmp_path / "empty"), *out]) == 2
    line = _error_line(capsys)
    assert "empty: not an export folder" in line and "export.json" in line
    assert main(["downstream", str(tiny_h5), "--sr", str(tmp_path / "missing"), *out]) == 2
    assert "--sr" in _error_line(capsys)
    assert main(["downstream", str(tiny_h5), "--task", "find", *out]) == 2
    line = _error_line(capsys)
    assert line.startswith("lensearch downstream: error: --task find:") and "non_lens" in line
    assert main(["downstream", str(tiny_h5), "--epochs", "0", *out]) == 2
    assert "--epochs" in _error_line(capsys)
    assert not (tmp_path / "out").exists()  # nothing written before the input is known good
