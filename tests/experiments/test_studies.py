"""The study's pure parts (experiments/studies/studies.py, headline.py): findings from numbers, the hardware label,
README rendering and the marked-section rewrite; plus the search files parse in both profiles. No Ray."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

STUDIES = Path(__file__).resolve().parents[2] / "experiments" / "studies"
sys.path.insert(0, str(STUDIES))

import headline  # noqa: E402
import studies  # noqa: E402


# ------------------------------------------------------------------------------------------ search files
@pytest.mark.parametrize("question", list(studies.QUESTIONS))
def test_every_search_file_parses_in_both_profiles(question):
    from lensearch.search.schema import load_search

    q = studies.QUESTIONS[question]
    for name in q.yamls:
        path = STUDIES / question / name
        search = load_search(path)
        assert set(search.profiles) == {"cpu", "gpu"}, path
        cpu = search.with_profile("cpu")
        search.with_profile("gpu")
        # the 2-core profile states its time budget and keeps it within the study's 4-8 minutes per search
        assert cpu.budget["time_budget_s"] is not None and 60 <= cpu.budget["time_budget_s"] <= 480, path
        assert "cpu:" in path.read_text().split("name:")[0], f"{path}: the header states the cpu sizing"


def test_architecture_files_differ_only_in_the_model():
    import yaml

    docs = {p.stem: yaml.safe_load(p.read_text()) for p in (STUDIES / "architectures").glob("*.yaml")}
    assert set(docs) == {y.removesuffix(".yaml") for y in studies.QUESTIONS["architectures"].yamls}
    budgets = {json.dumps(d["profiles"]["cpu"]["budget"], sort_keys=True) for d in docs.values()}
    data = {json.dumps(d["profiles"]["cpu"]["data"], sort_keys=True) for d in docs.values()}
    assert len(budgets) == 1 and len(data) == 1  # the same compute and the same data for every family
    assert {d["objective"]["metric"] for d in docs.values()} == {"val_psnr"}


def test_efficiency_arms_differ_only_in_early_stopping_and_searcher():
    import yaml

    docs = [yaml.safe_load((STUDIES / "search_efficiency" / y).read_text())
            for y in studies.QUESTIONS["search_efficiency"].yamls]
    strip = [{k: v for k, v in d.items() if k not in ("name", "early_stopping", "searcher")} for d in docs]
    assert all(s == strip[0] for s in strip)


# ------------------------------------------------------------------------------------------ hardware
def test_hardware_label():
    cpuinfo = "processor\t: 0\nmodel name\t: AMD EPYC   7B13\nprocessor\t: 1\nmodel name\t: AMD EPYC   7B13\n"
    assert studies.hardware_label(cpuinfo, 2, [], 23.4) == "AMD EPYC 7B13, 2 CPU cores, 23 GiB, no GPU"
    label = studies.hardware_label(cpuinfo, 16, ["NVIDIA H200", "NVIDIA H200"])
    assert label == "AMD EPYC 7B13, 16 CPU cores, 2 x NVIDIA H200"


# ------------------------------------------------------------------------------------------ statistics
def test_bootstrap_intervals():
    m, lo, hi = studies.mean_ci([1.0, 2.0, 3.0, 4.0])
    assert m == 2.5 and 1.0 <= lo < m < hi <= 4.0
    assert math.isnan(studies.mean_ci([5.0])[1])
    d = studies.paired_diff_ci([2.0, 3.0, 4.0], [1.0, 2.0, 3.0])
    assert d == (1.0, 1.0, 1.0)  # a constant paired difference has a zero-width interval
    with pytest.raises(ValueError):
        studies.paired_diff_ci([1.0], [1.0, 2.0])
    g = studies.gap_closed_ci([41.0, 43.0], [40.0, 42.0], [50.0, 52.0])
    assert g[0] == pytest.approx(0.1) and g[1] == pytest.approx(0.1)
    assert studies.fmt_ci(0.1234, 0.1, 0.15, pct=True) == "12.3 % [10.0, 15.0]"
    assert studies.fmt_ci(1.0, float("nan"), float("nan"), unit=" dB") == "1.00 dB"
    assert studies.fmt_ci(float("nan"), 0, 1) == "-"


def _per_image(rng, n=40):
    bic = 40 + rng.normal(0, 1, n)
    return {"bicubic": {"psnr": list(bic), "ssim": [0.96] * n, "ssim_skimage": [0.95] * n},
            "noise_ceiling": {"psnr": list(bic + 10), "ssim": [0.99] * n, "ssim_skimage": [0.99] * n},
            "rdn": {"psnr": list(bic + 5 + rng.normal(0, 0.1, n)), "ssim": [0.975] * n, "ssim_skimage": [0.97] * n},
            "espcn": {"psnr": list(bic + 4.95 + rng.normal(0, 0.1, n)), "ssim": [0.974] * n,
                      "ssim_skimage": [0.969] * n},
            "srgan": {"psnr": list(bic - 1 + rng.normal(0, 0.1, n)), "ssim": [0.9] * n, "ssim_skimage": [0.9] * n}}


def test_architecture_summary_ranks_and_states_uncertainty():
    per = _per_image(np.random.default_rng(0))
    out = studies.architecture_summary(per, {"rdn": {"params": 1000, "trials": 7}})
    models = [r["model"] for r in out["rows"]]
    assert models == ["rdn", "espcn", "srgan", "bicubic", "noise_ceiling"]
    top = out["rows"][0]
    assert top["gain_db"] == pytest.approx(5.0, abs=0.05) and top["gain_lo"] < top["gain_db"] < top["gain_hi"]
    assert top["gap_closed"] == pytest.approx(0.5, abs=0.01) and top["params"] == 1000
    text = " ".join(out["findings"])
    assert text.startswith("rdn is best: test PSNR") and "over bicubic" in text and "% [" in text
    assert "runner-up espcn" in text
    assert "Worse than bicubic on the test images (CI below 0): srgan." in text
    # every number in the first sentence is the table's
    assert f"{top['test_psnr']:.2f} dB" in out["findings"][0]


def test_published_comparison_explains_the_data():
    per = _per_image(np.random.default_rng(1))
    rows = studies.architecture_summary(per)["rows"]
    pub = studies.published_comparison(rows, 50.0)
    assert pub["table"][0][1] == "40.1-41.6"
    notes = " ".join(pub["notes"])
    assert "published bicubic range (40.1-41.6 dB)" in notes and "noise ceiling (50.00 dB)" in notes
    assert "skimage" in notes and "Data differences" in notes and "of unrecorded origin" in notes
    degrade = " ".join(studies.published_comparison(rows, 50.0, lr_mode="degrade")["notes"])
    assert "lr_mode 'degrade'" in degrade


def test_effect_tables_find_a_real_effect_and_a_tie():
    rng = np.random.default_rng(0)
    points = []
    for i in range(30):
        norm = ["none", "asinh", "log"][i % 3]
        flips = bool(i % 2)
        y = {"none": 5.0, "asinh": 5.0, "log": 3.0}[norm] + rng.normal(0, 0.05)
        points.append(({"normalization": norm, "augment.flips": flips, "optimizer.adam.lr": 10 ** (-3 + i / 30)},
                       y + 0.3 * np.log10(10 ** (-3 + i / 30))))
    out = studies.effect_tables(points, "gain (dB)")
    tabs = {t["param"]: t for t in out["tables"]}
    norm = tabs["normalization"]
    assert [r["value"] for r in norm["rows"]][-1] == "log"
    assert norm["rows"][-1]["diff_lo"] > 1.5  # log is clearly worse
    assert tabs["optimizer.adam.lr"]["kind"] == "numeric" and tabs["optimizer.adam.lr"]["spearman"] > 0.2
    text = "\n".join(out["findings"])
    assert out["findings"][0].startswith("normalization: ")  # the largest effect first
    assert "normalization: the worst value, log" in text
    assert "is not distinguishable from the runner-up" in text  # none vs asinh (equal means)
    assert studies.importance_findings({"fANOVA": {"normalization": 0.8, "augment.flips": 0.2},
                                        "skipped": {"PED-ANOVA": "too few"}}) == [
        "fANOVA importance (share of the objective's variation): normalization 0.80, augment.flips 0.20.",
        "PED-ANOVA could not rank these trials: too few."]


def test_efficiency_summary():
    def recs(values, step=10.0):
        return [{"trial": f"t{i}", "wall": step * (i + 1), "val_psnr": v} for i, v in enumerate(values)]

    arms = {"asha_tpe": {0: recs([30, 35, 38]), 1: recs([31, 37, 39])},
            "random": {0: recs([30, 33, 34]), 1: recs([32, 33, 35])}}
    out = studies.efficiency_summary(arms, budget_s=60)
    assert [r["arm"] for r in out["rows"]] == ["asha_tpe", "random"]
    top = out["rows"][0]
    assert top["final_mean"] == 38.5 and top["reached_reference"] == 2
    assert top["reach_share_median"] == pytest.approx(20 / 60)  # random's 34 and 35 were passed at 20 s
    assert top["diff_vs_reference"][0] == pytest.approx(4.0)
    assert out["findings"][0].startswith("Highest mean final best val_psnr: asha_tpe")
    assert "better in 2 of 2" in out["findings"][1]
    assert studies.best_so_far(recs([3, 2, 5])) == [(10.0, 3.0), (30.0, 5.0)]
    assert math.isnan(studies.value_at([(10.0, 3.0)], 5.0)) and studies.value_at([(10.0, 3.0)], 10.0) == 3.0


def test_downstream_summary():
    def m(v, lo, hi):
        return {"value": v, "lo": lo, "hi": hi}

    ds = {"tasks": {
        "find": {"n_test": 80, "versions": {"HR": {"metrics": {"auc_macro": m(0.99, 0.97, 1.0)}},
                                            "bicubic": {"metrics": {"auc_macro": m(0.80, 0.70, 0.88)}},
                                            "SR:export_sr": {"metrics": {"auc_macro": m(0.95, 0.91, 0.98)}},
                                            "LR-trained": {"metrics": {"auc_macro": m(0.97, 0.94, 0.99)}}},
                 "comparisons": {"SR:export_sr": {"auc_macro": {"vs_bicubic": m(0.15, 0.08, 0.22),
                                                                "recovered": m(0.79, 0.5, 1.1)}}}},
        "regress": {"n_test": 60, "versions": {"HR": {"metrics": {"mae_theta_E": m(0.02, 0.015, 0.025)}},
                                               "bicubic": {"metrics": {"mae_theta_E": m(0.06, 0.05, 0.07)}},
                                               "SR:export_sr": {"metrics": {"mae_theta_E": m(0.03, 0.02, 0.04)}}}},
        # HR and bicubic within each other's interval: a share of their difference would be noise over noise
        "classify": {"n_test": 60, "versions": {"HR": {"metrics": {"auc_macro": m(0.670, 0.56, 0.77)}},
                                                "bicubic": {"metrics": {"auc_macro": m(0.688, 0.58, 0.78)}},
                                                "SR:export_sr": {"metrics": {"auc_macro": m(0.566, 0.45, 0.68)}},
                                                "LR-trained": {"metrics": {"auc_macro": m(0.672, 0.57, 0.77)}}},
                     "comparisons": {"SR:export_sr": {"auc_macro": {"vs_bicubic": m(-0.122, -0.24, -0.01),
                                                                    "recovered": m(6.66, -20, 20)}}}}}}
    out = studies.downstream_summary(ds)
    assert len(out["rows"]) == 11
    text = "\n".join(out["findings"])
    assert "find (auc_macro, higher is better, 80 test images): SR:export_sr 0.950 [0.910, 0.980]" in text
    assert "SR - bicubic 0.150 [0.080, 0.220] (paired): SR is consistently better than bicubic" in text
    assert "SR recovers 79.0 % [50.0, 110.0] of the bicubic -> HR difference" in text
    # no paired comparison: the unpaired intervals decide; lower is better, the same share formula
    assert "SR recovers 75.0 % of the bicubic -> HR difference" in text
    assert "SR - bicubic -0.122 [-0.240, -0.010] (paired): SR is consistently worse than bicubic" in text
    assert "666" not in text and "classify" in text
    assert "HR and bicubic are not distinguishable on this task, so no share of their difference is stated" in text
    assert "find: a network trained on bicubically upsampled LR images scores 0.970 [0.940, 0.990]: better than " \
           "the HR-trained network on bicubic images" in text
    assert "classify: a network trained on bicubically upsampled LR images scores 0.672 [0.570, 0.770]: not " \
           "distinguishable from the HR-trained network" in text


# ------------------------------------------------------------------------------------------ documents
def test_replace_section():
    text = "intro\n<!-- study:begin -->\nold\nlines\n<!-- study:end -->\nrest\n"
    new = studies.replace_section(text, "new table")
    assert new == "intro\n<!-- study:begin -->\nnew table\n<!-- study:end -->\nrest\n"
    assert studies.replace_section(new, "new table") == new  # idempotent
    with pytest.raises(ValueError):
        studies.replace_section("no markers", "x")
    with pytest.raises(ValueError):
        studies.replace_section("<!-- study:end --> <!-- study:begin -->", "x")
    with pytest.raises(ValueError):
        studies.replace_section(text + text, "x")


def test_headline_and_readme_rendering(tmp_path):
    res = {"question": "architectures", "scale": "cpu", "quick": False, "hardware": "AMD EPYC, 2 CPU cores, no GPU",
           "date": "2026-11-26 19:00 UTC", "command": "python experiments/studies/run.py architectures",
           "wall_s": 600.0, "data_label": "model_i_800_seed0.h5", "headline": "best architecture rdn: +5.0 dB",
           "tables": [{"title": "T", "head": ["a", "b"], "rows": [["x", 1.23456], ["y", None]]}],
           "findings": ["rdn is best"], "notes": ["n"], "figures": [{"path": "figures/f.png", "caption": "cap"}],
           "report": "report"}
    section = studies.headline_section({"architectures": res})
    assert "| [architectures](experiments/studies/architectures/README.md) |" in section
    assert "best architecture rdn: +5.0 dB" in section and "cpu; AMD EPYC, 2 CPU cores, no GPU" in section
    assert section.count("not run yet") == len(studies.QUESTIONS) - 1
    readme = studies.render_readme("architectures", res)
    assert "scaled down for 2 CPU cores" in readme and "| x | 1.235 |" in readme and "| y | - |" in readme
    assert "![cap](figures/f.png)" in readme and "- rdn is best" in readme
    assert "QUICK" in studies.render_readme("architectures", {**res, "quick": True})
    assert "Not run yet" in studies.render_readme("preprocessing", None)

    # headline.py reads results.json files, ignores quick runs, and rewrites only the marked section
    root = tmp_path / "studies"
    for q, body in (("architectures", res), ("preprocessing", {**res, "quick": True})):
        (root / q).mkdir(parents=True)
        (root / q / "results.json").write_text(json.dumps(body))
    loaded = headline.load_results(root)
    assert loaded["architectures"]["headline"] == res["headline"] and loaded["preprocessing"] is None
    readme_path = tmp_path / "README.md"
    readme_path.write_text("# x\n<!-- study:begin -->\n<!-- study:end -->\n")
    assert headline.main(["--readme", str(readme_path), "--check"]) == 1
    assert headline.main(["--readme", str(readme_path)]) == 0
    assert headline.main(["--readme", str(readme_path), "--check"]) == 0


def test_repo_readme_section_is_current():
    """README.md's study section is what headline.py generates from the committed results."""
    assert headline.main(["--check"]) == 0
