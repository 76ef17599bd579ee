"""Search files that fit the machine: profiles, the profile choice, the up-front cost estimate, and the
checks that run before Ray starts (patch sizes, one validation set for trials and reference)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from lensearch.errors import UserError
from lensearch.search.schema import apply_profile, load_search, parse_search
from lensearch.search.tuner import _check_patch_sizes, _val_max_images, choose_profile

REPO = Path(__file__).resolve().parents[2]
BASE = {
    "name": "p", "budget": {"num_samples": 20, "max_epochs": 30},
    "space": {"model": {"choice": {"espcn": {"num_features": {"categorical": [32, 64]}}}},
              "train": {"batch_size": 16, "patch_size": 96}},
    "profiles": {"cpu": {"budget": {"max_epochs": 3, "time_budget_s": 60},
                         "space": {"model": {"choice": {"espcn": {"num_features": 8, "num_layers": 3}}}}}},
}


def _write(tmp_path, doc) -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_a_profile_overrides_sections_key_by_key_one_level_deep(tmp_path):
    search = load_search(_write(tmp_path, BASE))
    assert search.profile is None and search.profiles == ["cpu"]
    assert search.budget["max_epochs"] == 30
    cpu = search.with_profile("cpu")
    assert cpu.profile == "cpu"
    assert (cpu.budget["num_samples"], cpu.budget["max_epochs"], cpu.budget["time_budget_s"]) == (20, 3, 60)
    # space.model replaced whole, space.train kept
    assert cpu.space.materialize({"model": "espcn"})["model"] == {"name": "espcn", "num_features": 8, "num_layers": 3}
    assert cpu.space.materialize({"model": "espcn"})["train"]["patch_size"] == 96
    assert "profiles" not in apply_profile(BASE, BASE["profiles"]["cpu"])


def test_every_profile_is_validated_even_the_one_not_applied(tmp_path):
    doc = {**BASE, "profiles": {"cpu": {"budget": {"max_epochs": 0}}}}
    with pytest.raises(UserError, match=r"s\.yaml: profiles\.cpu: budget\.max_epochs: expected an integer >= 1"):
        load_search(_write(tmp_path, doc))
    doc = {**BASE, "profiles": {"gpu": {"budgett": {}}}}
    with pytest.raises(UserError, match=r"profiles\.gpu\.budgett: unknown section"):
        load_search(_write(tmp_path, doc))
    with pytest.raises(UserError, match=r"--profile tpu: no such profile; the file has: cpu"):
        load_search(_write(tmp_path, BASE)).with_profile("tpu")


def test_the_profile_follows_the_cluster_unless_asked():
    search = parse_search({**BASE, "profiles": {"cpu": {}, "gpu": {}}}, Path("s.yaml"))
    assert choose_profile(search, {"CPU": 2.0}, None)[0] == "cpu"
    assert choose_profile(search, {"CPU": 16.0, "GPU": 1.0}, None)[0] == "gpu"
    assert choose_profile(search, {"CPU": 2.0}, "gpu") == ("gpu", "asked for with --profile")
    plain = parse_search({k: v for k, v in BASE.items() if k != "profiles"}, Path("s.yaml"))
    assert choose_profile(plain, {"CPU": 2.0}, None)[0] is None


@pytest.mark.parametrize("name", ["smoke", "cnn", "gan", "transformer", "diffusion", "all"])
def test_every_shipped_space_has_a_cpu_profile_sized_for_a_time_budget(name):
    search = load_search(REPO / "search_spaces" / f"{name}.yaml")
    cpu = search.with_profile("cpu") if search.profiles else search
    assert cpu.budget["time_budget_s"] and cpu.budget["time_budget_s"] <= 1500, name
    assert cpu.resources["workers"] == 1


def test_patch_sizes_that_cannot_fit_the_data_are_refused_before_ray(tmp_path, tiny_h5):
    search = load_search(_write(tmp_path, BASE))
    with pytest.raises(UserError, match=r"s\.yaml: space\.train\.patch_size: expected at most the HR image size "
                                        r"64 px, got 96"):
        _check_patch_sizes(search, None, str(tiny_h5))
    ok = load_search(_write(tmp_path, {**BASE, "space": {**BASE["space"], "train": {"patch_size": 32}}}))
    _check_patch_sizes(ok, None, str(tiny_h5))


def test_trials_and_their_reference_use_one_validation_set(tmp_path):
    one = load_search(_write(tmp_path, {**BASE, "space": {**BASE["space"], "train": {"val_max_images": 7}}}))
    assert _val_max_images(one, None) == 7
    assert _val_max_images(load_search(_write(tmp_path, BASE)), None) == 0
    many = {**BASE, "space": {**BASE["space"], "train": {"val_max_images": {"categorical": [5, 7]}}}}
    with pytest.raises(UserError, match=r"space\.train\.val_max_images: expected one fixed value"):
        _val_max_images(load_search(_write(tmp_path, many)), None)


def test_the_estimate_times_each_model_and_flags_a_budget_no_trial_fits(tmp_path, tiny_h5):
    from lensearch.data.store import train_stats
    from lensearch.search.estimate import estimate_search
    from lensearch.training.runinfo import RunInfo

    doc = {**BASE, "space": {"model": {"choice": {"espcn": {"num_features": 8, "num_layers": 3},
                                                  "rdn": {"num_features": 8, "num_blocks": 1}}},
                             "train": {"batch_size": 8, "patch_size": 32, "steps_per_epoch": 10}}}
    search = load_search(_write(tmp_path, doc))
    run_info = RunInfo(data_path=str(tiny_h5), scale=2, in_channels=1, stats=train_stats(tiny_h5))
    budget = {"num_samples": 4, "max_epochs": 2, "time_budget_s": 1e-3}
    estimates, lines = estimate_search(search, run_info, budget=budget, threads=1, workers=1, concurrency=2)
    assert [e.model for e in estimates] == ["espcn", "rdn"]
    for e in estimates:
        assert e.step_s > 0 and e.val_s > 0
        assert e.trial_s == pytest.approx(3.0 + 2 * (10 * e.step_s + e.val_s))
    assert lines[0].startswith("estimate") and lines[1].startswith("warning: budget.time_budget_s=0.001s cannot "
                                                                   "finish one full trial of espcn, rdn")


def test_time_budget_states_are_counted_and_full_budget_trials_share_a_front():
    from lensearch.search.leaderboard import one_line_summary
    from lensearch.search.results import SearchOutcome, TrialRow, pareto_front, summary_metrics

    def row(tid, state, psnr, params):
        return TrialRow(tid, state, 3, {"val_psnr": psnr, "params": params}, {}, None, None)

    rows = [row("a", "completed", 40.0, 100), row("b", "cut by time budget at epoch 2", 41.0, 50),
            row("c", "hit its time limit at epoch 2", 39.0, 10), row("d", "stopped early at epoch 1", 45.0, 1)]
    outcome = SearchOutcome("s", Path("."), [("val_psnr", "max"), ("params", "min")], rows, None, "", 1.0)
    s = summary_metrics(outcome)
    assert (s["completed"], s["cut_by_time_budget"], s["hit_time_limit"], s["stopped_early"]) == (1, 1, 1, 1)
    assert "1 cut by the time budget, 1 at their time limit" in one_line_summary(outcome)
    # trials that used their whole budget (epochs or their own time limit) are compared; cut or stopped are not
    assert {r.trial_id for r in pareto_front(outcome)} == {"a", "c"}
