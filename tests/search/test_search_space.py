"""Search-space files: schema validation with key paths, the define-by-run space, the CLI (no Ray)."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
import yaml

from lensearch.cli import main
from lensearch.errors import UserError
from lensearch.search.schema import load_search

REPO = Path(__file__).resolve().parents[2]
SHIPPED = sorted((REPO / "search_spaces").glob("*.yaml"))


def _write(tmp_path, doc) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(doc) if not isinstance(doc, str) else doc)
    return path


BASE = {"space": {"model": {"choice": {"rdn": {"num_blocks": {"int": [1, 3]}},
                                       "srresnet": {"num_blocks": {"int": [1, 2]}, "batch_norm": False}}},
                  "optimizer": {"choice": {"adam": {"lr": {"logfloat": [1e-4, 1e-2]}},
                                           "sgd": {"lr": {"logfloat": [1e-3, 1e-1]}, "nesterov": True}}},
                  "train": {"batch_size": {"categorical": [8, 16]}}}}


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_search_spaces_are_valid(path):
    """Every sampled point of a shipped space is a valid run configuration, and `space show` lists every
    parameter a trial can get."""
    from lensearch.training.validate import check_run_config

    search = load_search(path)
    described = {name for name, _, _ in search.space.describe()}
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(12):
        trial = study.ask()
        search.space.suggest(trial)
        assert set(trial.params) <= described, set(trial.params) - described
        check_run_config(search.space.materialize(trial.params))
        study.tell(trial, 0.0)


def test_inactive_branches_never_appear_and_configs_materialize(tmp_path):
    search = load_search(_write(tmp_path, BASE))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    seen = set()
    for _ in range(30):
        trial = study.ask()
        search.space.suggest(trial)
        params = trial.params
        model, opt = params["model"], params["optimizer"]
        seen.add(model)
        assert all(not k.startswith("model.") or k.startswith(f"model.{model}.") for k in params)
        assert all(not k.startswith("optimizer.") or k.startswith(f"optimizer.{opt}.") for k in params)
        config = search.space.materialize(params)
        assert config["model"]["name"] == model
        assert config["model"]["num_blocks"] == params[f"model.{model}.num_blocks"]
        if model == "srresnet":
            assert config["model"]["batch_norm"] is False
        if opt == "sgd":
            assert config["optimizer"]["nesterov"] is True
        study.tell(trial, 0.0)
    assert seen == {"rdn", "srresnet"}


@pytest.mark.parametrize("doc, message", [
    ({"space": {"model": {"choice": {"edsr": {}}}}}, "space: model: unknown model 'edsr'"),
    ({"space": {"model": {"choice": {"rdn": {"blocks": {"int": [1, 2]}}}}}}, "model.rdn.blocks: unknown parameter"),
    ({"space": {"model": {"choice": {"rdn": {"num_blocks": {"int": [3, 1]}}}}}}, "space.model.rdn.num_blocks.int: low 3 is above high 1"),
    ({"space": {"optimizer": {"choice": {"adam": {"lr": {"logfloat": [0, 1]}}}}}}, "log scale needs low > 0"),
    ({"space": {"train": {"batch_size": {"categorical": []}}}}, "space.train.batch_size.categorical: expected a non-empty list"),
    ({"space": {"training": {}}}, "space.training: unknown section"),
    ({"space": {"train": {"choice": {"a": {}}}}}, "space.train: a choice is only allowed in"),
    ({"budget": {"num_samples": "ten"}, "space": {"model": {"name": "rdn"}}}, "budget.num_samples: expected an integer >= 1, got 'ten'"),
    ({"early_stopping": {"name": "pbt"}, "space": {"model": {"name": "rdn"}}}, "early_stopping.name: expected one of asha"),
    ({"objective": {"metric": "val_fid"}, "space": {"model": {"name": "rdn"}}}, "objective.metric: expected one of"),
    ({"objective": [{"metric": "val_psnr"}, {"metric": "params", "mode": "min"}], "searcher": {"name": "cmaes"},
      "space": {"model": {"name": "rdn"}}}, "cmaes supports one objective only"),
    ({"resources": {"workers": 0}, "space": {"model": {"name": "rdn"}}}, "resources.workers: expected an integer >= 1"),
    ({"sapce": {}}, "sapce: unknown top-level key"),
    ({"name": "x"}, "space: missing"),
    ("space: [unclosed", "line 1: not valid YAML"),
])
def test_bad_search_files_name_file_and_key_path(tmp_path, doc, message):
    path = _write(tmp_path, doc)
    with pytest.raises(UserError) as err:
        load_search(path)
    assert str(path) in str(err.value) and message in str(err.value)
    assert "\n" not in str(err.value)


def test_cli_space_show_and_sample(tmp_path, capsys):
    path = _write(tmp_path, BASE)
    assert main(["space", "show", str(path)]) == 0
    out = capsys.readouterr().out
    assert "model.rdn.num_blocks" in out and "[when model=rdn]" in out
    assert main(["space", "sample", str(path), "-n", "3", "--json"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3
    search = load_search(path)
    for line in lines:  # each sample is a point of the space and its run configuration
        sample = json.loads(line)
        params = sample["params"]
        assert sample["config"] == search.space.materialize(params)
        model = params["model"]
        assert model in ("rdn", "srresnet")
        assert 1 <= params[f"model.{model}.num_blocks"] <= {"rdn": 3, "srresnet": 2}[model]
        low, high = {"adam": (1e-4, 1e-2), "sgd": (1e-3, 1e-1)}[params["optimizer"]]
        assert low <= params[f"optimizer.{params['optimizer']}.lr"] <= high
        assert params["train.batch_size"] in (8, 16)
    assert main(["space", "sample", str(path), "-n", "3", "--json"]) == 0
    assert capsys.readouterr().out.strip().splitlines() == lines  # seeded: the same samples again


def test_cli_bad_space_file_is_one_line_and_exit_2(tmp_path, capsys):
    path = _write(tmp_path, {"budget": {"max_epochs": -1}, "space": {"model": {"name": "rdn"}}})
    assert main(["space", "show", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "budget.max_epochs" in err and str(path) in err
    assert main(["tune", str(tmp_path / "missing.yaml")]) == 2
    assert "no such search-space file" in capsys.readouterr().err


def test_early_stopped_trials_are_told_to_optuna_as_pruned_not_complete(tmp_path):
    """Ray's OptunaSearch would tell a trial ASHA stopped at epoch 1 as COMPLETE with its partial value."""
    from lensearch.search.samplers import make_searcher

    search = load_search(_write(tmp_path, {**BASE, "searcher": {"name": "tpe", "seed": 0, "startup_trials": 1}}))
    searcher = make_searcher(search, max_epochs=3)
    for trial_id, epochs in (("stopped", 1), ("finished", 3)):
        assert searcher.suggest(trial_id)
        for epoch in range(1, epochs + 1):
            result = {"val_psnr": 30.0 + epoch, "epoch": epoch}
            searcher.on_trial_result(trial_id, result)
        searcher.on_trial_complete(trial_id, result)
    trials = searcher._ot_study.get_trials(deepcopy=False)
    assert [t.state for t in trials] == [optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.COMPLETE]
    assert trials[0].intermediate_values == {1: 31.0}
    assert trials[1].value == 33.0 and trials[1].intermediate_values == {1: 31.0, 2: 32.0, 3: 33.0}


def test_tune_with_a_missing_explicit_data_file_fails_before_starting_anything(tmp_path, capsys):
    path = _write(tmp_path, {"data": {"path": str(tmp_path / "typo.h5")}, **BASE})
    assert main(["tune", str(path), "--store", str(tmp_path / "mlruns")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(path) in err and "typo.h5 does not exist" in err
    assert not (tmp_path / "typo.h5").exists()


def test_shipped_run_configuration_is_valid():
    from lensearch.training.config import load_run_config
    from lensearch.training.validate import check_run_config

    config = check_run_config(load_run_config(REPO / "experiments" / "runs" / "rdn_tiny.yaml"))
    assert config["model"]["name"] == "rdn" and config["train"]["monitor"] == "val_psnr_clean"


def test_a_clean_metric_on_data_without_hr_clean_is_refused_up_front(tmp_path, capsys):
    import numpy as np

    from lensearch.data.store import write_h5

    rng = np.random.default_rng(0)
    hr = rng.random((24, 1, 16, 16), dtype=np.float32)
    data = tmp_path / "noclean.h5"
    write_h5(data, hr=hr, lr=hr[:, :, ::2, ::2].copy())
    path = _write(tmp_path, {"data": {"path": str(data)}, "objective": {"metric": "val_psnr_clean"}, **BASE})
    assert main(["tune", str(path), "--store", str(tmp_path / "mlruns")]) == 2
    err = capsys.readouterr().err
    assert "val_psnr_clean needs noise-free HR" in err and err.strip().count("\n") == 0


MO = {**BASE, "objective": [{"metric": "val_psnr", "mode": "max"}, {"metric": "params", "mode": "min"}]}


def _drive(searcher, trials: int, epochs: int, value=lambda i, epoch: 30.0 + epoch, stop=lambda i: None):
    """Run ``trials`` trials one after another through a Ray searcher, as Tune would."""
    for i in range(trials):
        tid = f"t{i}"
        config = searcher.suggest(tid)
        assert config
        last = stop(i) or epochs
        for epoch in range(1, last + 1):
            result = {"epoch": epoch, "val_psnr": value(i, epoch), "params": 1000.0 + i}
            searcher.on_trial_result(tid, result)
        searcher.on_trial_complete(tid, result)


def test_nsga2_population_follows_the_budget_so_generations_advance(tmp_path):
    """Optuna's default population (50) never leaves generation 0 in a 16-trial budget (random search)."""
    from lensearch.search.samplers import make_searcher, nsga2_population

    search = load_search(_write(tmp_path, {**MO, "searcher": {"name": "nsga2", "seed": 0},
                                           "budget": {"num_samples": 16, "max_epochs": 2}}))
    searcher = make_searcher(search, max_epochs=2)
    _drive(searcher, 16, 2, value=lambda i, epoch: 20.0 + (i * 7) % 5 + epoch)
    key = "NSGAIISampler:generation"  # where optuna's NSGA-II (BaseGASampler) keeps a trial's generation
    trials = searcher._ot_study.get_trials(deepcopy=False)
    generations = [t.system_attrs[key] for t in trials]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert generations == sorted(generations) and max(generations) == 3, generations  # 4 generations of 4
    assert [nsga2_population(n) for n in (None, 1, 16, 64, 1000)] == [50, 4, 4, 16, 50]
    # the CLI's --num-samples override reaches the sampler too
    assert make_searcher(search, 2, num_samples=64)._sampler.population_size == 16


def test_multi_objective_searches_run_without_early_stopping(tmp_path):
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    from lensearch.search.samplers import make_scheduler

    said = []
    multi = load_search(_write(tmp_path, {**MO, "early_stopping": {"name": "asha"}}))
    assert type(make_scheduler(multi, 4, notice=said.append)) is FIFOScheduler
    assert len(said) == 1 and "early_stopping 'asha' ignored, no early stopping" in said[0] and "\n" not in said[0]
    none = load_search(_write(tmp_path, {**MO, "early_stopping": {"name": "none"}}))
    assert type(make_scheduler(none, 4, notice=said.append)) is FIFOScheduler and len(said) == 1
    single = load_search(_write(tmp_path, {**BASE, "early_stopping": {"name": "asha"}}))
    assert isinstance(make_scheduler(single, 4, notice=said.append), ASHAScheduler) and len(said) == 1


def test_pareto_front_compares_completed_trials_only():
    from lensearch.search.results import SearchOutcome, TrialRow, pareto_front

    def row(tid, state, psnr, params):
        return TrialRow(tid, state, 3, {"val_psnr": psnr, "params": params}, {}, None, None)

    rows = [row("a", "completed", 30.0, 100.0), row("b", "stopped early at epoch 1", 35.0, 50.0),
            row("c", "completed", 31.0, 200.0), row("d", "completed", 29.0, 150.0),
            row("e", "errored: boom", 40.0, 10.0)]
    outcome = SearchOutcome("s", Path("."), [("val_psnr", "max"), ("params", "min")], rows, None, "", 0.0)
    assert [r.trial_id for r in pareto_front(outcome)] == ["a", "c"]


def test_pareto_front_tie_rule_keeps_rows_equal_on_every_objective():
    """Dominated = another row at least as good on every objective and strictly better on one. Rows equal on every
    objective all stay, whatever their other metrics (here the epoch of their best report); a row equal on one
    objective and worse on the other is dominated."""
    from lensearch.search.results import TrialRow, pareto_rows

    def row(tid, psnr, params, epoch):
        return TrialRow(tid, "completed", 3, {"val_psnr": psnr, "params": params, "epoch": epoch}, {}, None, None)

    rows = [row("a", 30.0, 100.0, 3), row("b", 30.0, 100.0, 2), row("c", 30.0, 150.0, 3), row("d", 29.0, 100.0, 3),
            row("e", 31.0, 300.0, 1)]
    objectives = [("val_psnr", "max"), ("params", "min")]
    assert [r.trial_id for r in pareto_rows(rows, objectives)] == ["a", "b", "e"]
    assert [r.trial_id for r in pareto_rows(rows[:2], objectives)] == ["a", "b"]  # exact duplicates: both


def test_optuna_is_told_the_best_epoch_like_the_leaderboard(tmp_path):
    """The leaderboard and export rank a trial by its best epoch; Optuna must be told the same value."""
    from lensearch.search.samplers import make_searcher

    curve = {1: 31.0, 2: 35.0, 3: 33.0}
    search = load_search(_write(tmp_path, {**BASE, "searcher": {"name": "tpe", "seed": 0}}))
    searcher = make_searcher(search, max_epochs=3)
    _drive(searcher, 1, 3, value=lambda i, epoch: curve[epoch])
    (trial,) = searcher._ot_study.get_trials(deepcopy=False)
    assert trial.state == optuna.trial.TrialState.COMPLETE and trial.value == 35.0

    multi = make_searcher(load_search(_write(tmp_path, {**MO, "searcher": {"name": "nsga2", "seed": 0}})), 3)
    assert multi.suggest("m")
    for epoch, psnr in curve.items():
        multi.on_trial_result("m", {"epoch": epoch, "val_psnr": psnr, "params": 100.0 + epoch})
    multi.on_trial_complete("m", {"epoch": 3, "val_psnr": 33.0, "params": 103.0})
    (trial,) = multi._ot_study.get_trials(deepcopy=False)
    assert trial.values == [35.0, 102.0]  # every objective at the primary objective's best epoch


@pytest.mark.parametrize("metric", ["val_loss", "train_loss"])
def test_losses_are_refused_as_objectives_of_a_search(tmp_path, metric):
    path = _write(tmp_path, {**BASE, "objective": {"metric": metric, "mode": "min"}})
    with pytest.raises(UserError) as err:
        load_search(path)
    text = str(err.value)
    assert f"objective.metric: {metric} cannot rank trials" in text and "val_psnr" in text and "\n" not in text
    one = load_search(_write(tmp_path, {**BASE, "objective": {"metric": metric, "mode": "min"},
                                        "budget": {"num_samples": 1}}))  # lensearch train: nothing to compare
    assert one.primary.metric == metric


def test_early_stopping_keeps_its_old_top_level_name_with_one_deprecation_line(tmp_path, capsys):
    """`early_stopping` (Ray Tune's trial scheduler) was `scheduler`, the name of the space's learning-rate
    schedule too: the old spelling behaves the same, says so once naming the file, and both at once is refused."""
    rule = {"name": "asha", "grace_period": 2, "reduction_factor": 3}
    new = load_search(_write(tmp_path, {**BASE, "early_stopping": rule}))
    assert capsys.readouterr().err == ""
    path = _write(tmp_path, {**BASE, "scheduler": rule,
                             "profiles": {"cpu": {"scheduler": {"name": "median"}}, "gpu": {"budget": {"num_samples": 2}}}})
    old = load_search(path)
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and str(path) in err and "early_stopping" in err and "deprecated" in err, err
    assert old.early_stopping == new.early_stopping and "scheduler" not in old.raw
    assert old.with_profile("cpu").early_stopping["name"] == "median"
    assert capsys.readouterr().err == ""  # applying a profile says nothing again
    for doc, where in (({**BASE, "scheduler": rule, "early_stopping": rule}, "scheduler"),
                       ({**BASE, "profiles": {"cpu": {"scheduler": rule, "early_stopping": rule}}},
                        "profiles.cpu.scheduler")):
        with pytest.raises(UserError) as caught:
            load_search(_write(tmp_path, doc))
        message = str(caught.value)
        assert "\n" not in message and f"{where}: a deprecated spelling of early_stopping" in message, message
