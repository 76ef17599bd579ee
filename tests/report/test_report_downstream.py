"""The report's "Downstream science" section on the shared tiny real search (``report_search``): first without
any ``lensearch downstream`` run (the section says how to make one), then after a real tiny one scored an
export of the search's best trial; the numbers in the section are the ones downstream logged, and the findings
follow from them."""

from __future__ import annotations

import json
import math

import pytest
from mlflow.tracking import MlflowClient

from lensearch.cli import main


def _report(outcome, out, capsys) -> tuple[dict, str, str]:
    store = outcome.search_dir.parents[1]
    assert main(["report", str(outcome.search_dir), "--out", str(out), "--store", str(store), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    return summary, (out / "report.md").read_text(), (out / "report.html").read_text()


@pytest.mark.ray
def test_the_report_shows_the_downstream_runs_of_its_trials(report_search, tiny_h5, tmp_path, capsys):
    from lensearch.downstream import DownstreamOptions, run_downstream
    from lensearch.export import export_search

    outcome = report_search
    store = outcome.search_dir.parents[1]

    # ---- no downstream run yet (an unrelated one in the same store does not count): the command to make one
    client = MlflowClient(outcome.tracking_uri)
    exp = client.get_experiment_by_name("downstream")
    exp_id = exp.experiment_id if exp else client.create_experiment("downstream")
    other = client.create_run(exp_id, tags={"lensearch.kind": "downstream", "lensearch.tasks": "classify",
                                            "lensearch.sr.x.trial_run_id": "f" * 32})
    client.log_metric(other.info.run_id, "classify/SR_x/accuracy", 0.5)
    client.set_terminated(other.info.run_id)
    summary, md, html = _report(outcome, tmp_path / "before", capsys)
    assert summary["downstream"]["runs"] == []
    how = summary["downstream"]["how_to"]
    assert how == (f"lensearch export {outcome.search_dir} --out rep-export --store {store} && lensearch downstream "
                   f"{tiny_h5} --sr rep-export --out rep-downstream --store {store}")
    for text in (md, html):
        assert "Downstream science" in text and "No lensearch downstream run" in text and "lensearch downstream" in text
    assert f"lensearch export {outcome.search_dir}" in md

    # ---- a real tiny downstream run of the best trial's export (registered: its export run nests under the parent)
    export = tmp_path / "best"
    manifest = export_search(str(outcome.search_dir), export, store=store, log=lambda text: None)
    trial_id, trial_run = manifest["source"]["trial_id"], manifest["source"]["run_id"]
    results = run_downstream(DownstreamOptions(data=tiny_h5, sr=[export], out=tmp_path / "ds", epochs=2,
                                               bootstrap=200, store=store, net_config={"base_channels": 8}),
                             log=lambda text: None)
    assert results["mlflow"]["tracking_uri"] == outcome.tracking_uri

    summary, md, html = _report(outcome, tmp_path / "after", capsys)
    (search,) = summary["searches"]
    assert len(search["leaderboard"]) == 2  # the export's registry run is not taken for a trial
    (run,) = summary["downstream"]["runs"]
    assert run["run_id"] == results["mlflow"]["run_id"]
    model = next(r.params["model"] for r in outcome.rows if r.trial_id == trial_id)
    assert run["sources"] == {"SR:best": {"search": "rep", "trial": trial_id, "model": model}}
    assert list(run["tasks"]) == list(results["tasks"]) == ["classify", "regress"]
    for name, task in run["tasks"].items():
        want = results["tasks"][name]
        assert list(task["versions"]) == ["LR-trained", "bicubic", "SR:best", "HR"]  # side by side, LR to HR
        for version, metrics in task["versions"].items():  # every logged number, as downstream computed it
            for metric, (value, lo, hi) in metrics.items():
                m = want["versions"][version]["metrics"][metric]
                for got, key in ((value, "value"), (lo, "lo"), (hi, "hi")):
                    assert (math.isnan(got) and not math.isfinite(m[key])) or got == pytest.approx(m[key]), \
                        (name, version, metric, key)
        for metric, pair in task["comparisons"]["SR:best"].items():
            for kind, (value, lo, hi) in pair.items():
                m = want["comparisons"]["SR:best"][metric][kind]
                assert (math.isnan(value) and not math.isfinite(m["value"])) or value == pytest.approx(m["value"])

    # the findings follow from the paired intervals: auc_macro of the classifier, RMSE of theta_E
    lines = {name: task["findings"] for name, task in run["tasks"].items()}
    assert lines["regress"] and lines["classify"]
    for name, metric, sign in (("classify", "auc_macro", 1), ("regress", "rmse_theta_E", -1)):
        (line,) = [ln for ln in lines[name] if ln.startswith(f"{name}, {metric}: SR:best ")]
        diff = results["tasks"][name]["comparisons"]["SR:best"][metric]["vs_bicubic"]
        assert f"SR − bicubic {diff['value']:+.3f} [{diff['lo']:+.3f}, {diff['hi']:+.3f}]" in line, line
        lo, hi = sign * diff["lo"], sign * diff["hi"]  # > 0: better than bicubic
        verdict = ("beats bicubic" if lo > 0 and hi > 0 else "is worse than bicubic" if lo < 0 and hi < 0
                   else "is not distinguishable from bicubic")
        assert verdict in line, line
        versions = results["tasks"][name]["versions"]
        span = versions["HR"]["metrics"][metric]["value"] - versions["bicubic"]["metrics"][metric]["value"]
        if sign * span > 0:
            share = results["tasks"][name]["comparisons"]["SR:best"][metric]["recovered"]
            assert f"recovers {100 * share['value']:.0f} %" in line, line
        else:
            assert "no bicubic -> HR difference to recover" in line, line

    # both documents: the section, one table row per version, the findings; nothing of the unrelated run
    for text in (md, html):
        assert "Downstream science" in text and "No lensearch downstream run" not in text
        assert results["mlflow"]["run_id"] in text and other.info.run_id not in text
        for line in lines["classify"]:
            assert (line if text is md else line.replace("->", "-&gt;")) in text
    acc = results["tasks"]["classify"]["versions"]["SR:best"]["metrics"]["accuracy"]
    assert f"| SR:best | {acc['value']:.3f} [{acc['lo']:.3f}, {acc['hi']:.3f}] |" in md
    section = md.split("## Downstream science", 1)[1]  # (the leaderboard above has a bicubic row too)
    rows = [ln.split(" | ")[0] for ln in section.splitlines() if ln.startswith(("| LR-trained |", "| bicubic |",
                                                                               "| SR:best |", "| HR |"))]
    assert rows[:4] == ["| LR-trained", "| bicubic", "| SR:best", "| HR"]


# ------------------------------------------------------------------------------------------- findings, by hand
def _logged_run(tmp_path, metrics: dict[str, float], sr_tags: dict[str, str]):
    """A downstream-shaped MLflow run (tags and metric names as lensearch downstream logs them) in a fresh store."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("downstream", artifact_location=(tmp_path / "artifacts").as_uri())
    tags = {"lensearch.kind": "downstream", "lensearch.tasks": "classify,regress", "lensearch.data": "/d/x.h5",
            **{f"lensearch.sr.{name}.trial_run_id": run for name, run in sr_tags.items()}}
    run = client.create_run(exp, tags=tags)
    from mlflow.entities import Metric

    client.log_batch(run.info.run_id, metrics=[Metric(k, v, 0, 0) for k, v in metrics.items()])
    client.set_terminated(run.info.run_id)
    return uri, run.info.run_id


def _version(task: str, version: str, values: dict[str, tuple[float, float, float]]) -> dict[str, float]:
    out = {}
    for metric, (v, lo, hi) in values.items():
        out.update({f"{task}/{version}/{metric}": v, f"{task}/{version}/{metric}_lo": lo,
                    f"{task}/{version}/{metric}_hi": hi})
    return out


def test_findings_follow_the_paired_intervals_and_the_direction_of_each_metric(tmp_path):
    from types import SimpleNamespace

    from lensearch.report.downstream import find_downstream, finding_lines

    m = {}
    for version, auc, rmse in (("HR", 0.9, 0.1), ("bicubic", 0.7, 0.3), ("SR_good", 0.8, 0.2), ("SR_bad", 0.6, 0.4),
                               ("LR-trained", 0.75, 0.25)):
        m.update(_version("classify", version, {"auc_macro": (auc, auc - 0.1, auc + 0.1),
                                                "accuracy": (auc, auc - 0.1, auc + 0.1)}))
        m.update(_version("regress", version, {"rmse_theta_E": (rmse, rmse - 0.05, rmse + 0.05),
                                               "mae_theta_E": (rmse, rmse - 0.05, rmse + 0.05)}))
    m.update(_version("classify", "SR_good", {"auc_macro_vs_bicubic": (0.1, 0.02, 0.18),
                                              "auc_macro_recovered": (0.5, 0.1, 0.9)}))
    m.update(_version("classify", "SR_bad", {"auc_macro_vs_bicubic": (-0.1, -0.15, -0.05)}))
    m.update(_version("regress", "SR_good", {"rmse_theta_E_vs_bicubic": (-0.1, -0.2, 0.01)}))  # includes 0
    m.update(_version("regress", "SR_bad", {"rmse_theta_E_vs_bicubic": (0.1, 0.05, 0.15)}))  # higher error
    uri, run_id = _logged_run(tmp_path, m, {"good": "T1", "bad": "T2"})
    trials = [SimpleNamespace(run_id="T1", trial_id="t1", model="span"),
              SimpleNamespace(run_id="T2", trial_id="t2", model="espcn")]
    search = SimpleNamespace(name="s", tracking_uri=uri, trials=trials)
    (run,), uris = find_downstream([search])
    assert uris == [uri] and run.run_id == run_id
    assert run.sources == {"SR:good": {"search": "s", "trial": "t1", "model": "span"},
                           "SR:bad": {"search": "s", "trial": "t2", "model": "espcn"}}
    classify, regress = run.tasks["classify"], run.tasks["regress"]
    assert (classify.problem, regress.problem, regress.targets) == ("classification", "regression", ["theta_E"])
    assert run.order(classify) in (["LR-trained", "bicubic", "SR:good", "SR:bad", "HR"],
                                   ["LR-trained", "bicubic", "SR:bad", "SR:good", "HR"])
    assert classify.versions["SR:good"]["auc_macro"] == (0.8, pytest.approx(0.7), pytest.approx(0.9))
    lines = {ln.split(":", 1)[0] + ln.split(": ", 1)[1].split(" ", 1)[0]: ln
             for ln in finding_lines(run, classify) + finding_lines(run, regress)}
    good = lines["classify, auc_macroSR:good"]
    assert "beats bicubic (higher is better): SR − bicubic +0.100 [+0.020, +0.180]" in good
    assert "recovers 50 % [10 %, 90 %] of the bicubic -> HR difference" in good
    assert "the LR-trained network scores 0.750 (SR higher)" in good
    assert "is worse than bicubic" in lines["classify, auc_macroSR:bad"]
    assert "recovers -50 % of the bicubic -> HR difference" in lines["classify, auc_macroSR:bad"]
    # a metric without paired intervals (accuracy here, or an older run): only disjoint own intervals decide
    assert "is not distinguishable from bicubic (overlapping or missing 95 % intervals)" in lines[
        "classify, accuracySR:good"]
    # RMSE: lower is better; an interval that reaches past 0 decides nothing
    assert "is not distinguishable from bicubic: SR − bicubic -0.100 [-0.200, +0.010]" in lines[
        "regress, rmse_theta_ESR:good"]
    assert "is worse than bicubic" in lines["regress, rmse_theta_ESR:bad"]
    # a run that scored exports of no reported trial is not this report's
    assert find_downstream([SimpleNamespace(name="s", tracking_uri=uri, trials=trials[:0])])[0] == []
