"""The report's Pareto front is the search's (``lensearch.search.results.pareto_rows``), tie rule included."""

from __future__ import annotations

from pathlib import Path

from lensearch.report.build import pareto
from lensearch.report.collect import SearchData, TrialData


def _trial(tid: str, state: str, psnr: float, params: float) -> TrialData:
    history = {"val_psnr": [(1, psnr - 1.0), (2, psnr)], "params": [(1, params), (2, params)]}
    return TrialData(tid, f"run-{tid}", state, "FINISHED", {"model": "espcn"}, history, {"params": params}, None,
                     best={"epoch": 2.0, "val_psnr": psnr, "params": params})


def test_report_front_uses_the_search_rule_ties_stay_partial_budgets_are_left_out():
    from lensearch.search.results import pareto_rows

    trials = [_trial("a", "completed", 30.0, 100.0), _trial("b", "hit its time limit at epoch 2", 30.0, 100.0),
              _trial("c", "completed", 30.0, 200.0), _trial("d", "stopped early at epoch 2", 40.0, 1.0),
              _trial("e", "completed", 32.0, 400.0)]
    objectives = [("val_psnr", "max"), ("params", "min")]
    s = SearchData("s", Path("."), objectives, "", "p", {}, {}, {}, trials, 2)
    front = pareto(s)
    assert [t.trial_id for t in front] == ["a", "b", "e"]  # a and b tie on both objectives: both stay
    assert front == pareto_rows(trials, objectives)
