"""The early-stopping scheduler's records saved and restored (lensearch/search/scheduler_state.py), on Ray's
own scheduler objects: a restored scheduler makes the decisions the original one makes; a fresh one does not.
(The whole path - a real search interrupted and resumed - is in test_search_e2e.py.)"""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
from ray.tune.schedulers import ASHAScheduler, HyperBandScheduler, MedianStoppingRule, TrialScheduler

from lensearch.search.scheduler_state import (STATE_FILE, SchedulerStateKeeper, capture, keepers, load, restore,
                                              save, supported)

STOP, CONTINUE = TrialScheduler.STOP, TrialScheduler.CONTINUE


def _asha(**kw):
    return ASHAScheduler(time_attr="epoch", metric="val_psnr", mode="max", max_t=8, grace_period=1,
                         reduction_factor=kw.pop("reduction_factor", 2), **kw)


def _trial(tid: str):
    from ray.tune.experiment import Trial

    return Trial("__fake", trial_id=tid, stub=True)  # a real Tune trial, not registered with any trainable


def _feed(sched, trials, rows):
    """``rows``: (trial, epoch, value) results in order; returns the decisions."""
    tune = SimpleNamespace(get_live_trials=lambda: [])  # the median rule asks for waiting trials
    return [sched.on_trial_result(tune, trials[t], {"epoch": e, "val_psnr": v}) for t, e, v in rows]


def test_restored_asha_makes_the_same_stop_decisions_as_the_original(tmp_path):
    trials = {t: _trial(t) for t in ("a", "b", "c", "d", "e", "f")}
    first = _asha()
    for t in "abcd":
        first.on_trial_add(None, trials[t])
    before = _feed(first, trials, [("a", 1, 30.0), ("b", 1, 32.0), ("c", 1, 30.5), ("a", 2, 33.0),
                                   ("b", 2, 34.0), ("d", 1, float("nan"))])
    assert before == [CONTINUE, CONTINUE, STOP, CONTINUE, CONTINUE, CONTINUE]
    path = tmp_path / STATE_FILE
    save(capture(first), path)
    assert not list(tmp_path.glob(".*partial"))  # written atomically
    state = load(path)
    rung1 = dict(state["brackets"][0])[1]
    assert rung1 == {"a": 30.0, "b": 32.0, "c": 30.5, "d": None}  # NaN is null in JSON
    assert state["trial_bracket"] == {t: 0 for t in "abcd"} and state["num_stopped"] == 1

    # a resumed run: Tune builds the scheduler afresh and re-adds the trials it knows (here a, b and d)
    resumed, fresh = _asha(), _asha()
    for sched in (resumed, fresh):
        for t in "abd":
            sched.on_trial_add(None, trials[t])
    assert restore(resumed, state, list(trials.values())) == 4
    assert math.isnan(dict(resumed._brackets[0]._rungs)[1]["d"])
    assert resumed._num_stopped == 1
    # the rest of the search, told to the original and to the restored scheduler alike: same decisions
    rest = [("e", 1, 30.2), ("f", 1, 33.0), ("b", 4, 35.0), ("e", 2, 20.0), ("a", 4, 33.5)]
    for sched in (first, resumed, fresh):
        for t in "ef":
            sched.on_trial_add(None, trials[t])
    expected = _feed(first, trials, rest)
    assert expected[0] == STOP  # e is below rung 1's median (of 30, 30.5, 32: 30.5; NaN ignored)
    assert _feed(resumed, trials, rest) == expected
    assert capture(resumed)["brackets"] == capture(first)["brackets"]
    # without the records, nothing is stopped at rung 1: the bug this file fixes
    assert _feed(fresh, trials, rest)[0] == CONTINUE


def test_restore_refuses_another_layout_and_leaves_the_scheduler_untouched():
    sched = _asha()
    sched.on_trial_add(None, _trial("a"))
    sched.on_trial_result(None, _trial("a"), {"epoch": 1, "val_psnr": 30.0})
    state = capture(sched)
    other = _asha(reduction_factor=3)
    with pytest.raises(ValueError, match="rungs"):
        restore(other, state)
    assert all(not recorded for _, recorded in other._brackets[0]._rungs)
    minimise = ASHAScheduler(time_attr="epoch", metric="val_psnr", mode="min", max_t=8, grace_period=1,
                             reduction_factor=2)
    with pytest.raises(ValueError, match="mode"):
        restore(minimise, state)
    with pytest.raises(ValueError, match="kind"):
        restore(MedianStoppingRule(time_attr="epoch", metric="val_psnr", mode="max"), state)


def test_restored_median_rule_compares_with_trials_tune_no_longer_knows(tmp_path):
    def median():
        return MedianStoppingRule(time_attr="epoch", metric="val_psnr", mode="max", grace_period=1,
                                  min_samples_required=2)

    trials = {t: _trial(t) for t in "abcd"}
    first = median()
    rows = [("a", 1, 30.0), ("a", 2, 31.0), ("b", 1, 32.0), ("b", 2, 33.0)]
    _feed(first, trials, rows)
    state = json.loads(json.dumps(capture(first)))
    assert state["results"] == {"a": [[1, 30.0], [2, 31.0]], "b": [[1, 32.0], [2, 33.0]]}
    resumed, fresh = median(), median()
    restore(resumed, state, [trials["a"]])  # b began after Tune's last checkpoint: only its records remain
    assert trials["a"] in resumed._results and {getattr(k, "trial_id", None) for k in resumed._results} == {"a", "b"}
    # c at 1: its best 31.2 >= the median of a's and b's running means (30, 32); at 2 below (30.5, 32.5)
    rest = [("c", 1, 31.2), ("c", 2, 20.0)]
    expected = _feed(first, trials, rest)
    assert expected == [CONTINUE, STOP]
    assert _feed(resumed, trials, rest) == expected
    assert _feed(fresh, trials, rest) == [CONTINUE, CONTINUE]


def test_the_keeper_saves_after_each_result_and_restores_once_on_the_first_step(tmp_path, capsys):
    path = tmp_path / STATE_FILE
    trials = [_trial("a"), _trial("b")]
    sched = _asha()
    (keeper,) = keepers(sched, tmp_path)
    assert keeper.path == path
    keeper.on_step_begin(iteration=0, trials=trials)  # a new search: nothing to restore
    for t in trials:
        sched.on_trial_add(None, t)
    sched.on_trial_result(None, trials[0], {"epoch": 1, "val_psnr": 30.0})
    keeper.on_trial_result(iteration=1, trials=trials, trial=trials[0], result={})
    assert dict(load(path)["brackets"][0])[1] == {"a": 30.0}
    assert capsys.readouterr().err == ""

    # the callback as Tune unpickles it on --resume, holding the scheduler as it was pickled (records empty)
    import pickle

    revived = pickle.loads(pickle.dumps(SchedulerStateKeeper(_asha(), path)))
    revived.scheduler.on_trial_add(None, trials[1])
    revived.on_step_begin(iteration=0, trials=trials)
    assert "restored the AsyncHyperBandScheduler records of 1 trial(s)" in capsys.readouterr().err
    assert revived.scheduler.on_trial_result(None, trials[1], {"epoch": 1, "val_psnr": 29.0}) == STOP
    revived.on_trial_result(iteration=1, trials=trials, trial=trials[1], result={})
    assert dict(load(path)["brackets"][0])[1] == {"a": 30.0, "b": 29.0}
    revived.on_step_begin(iteration=1, trials=trials)  # once only: later steps do not re-read the file
    assert dict(revived.scheduler._brackets[0]._rungs)[1] == {"a": 30.0, "b": 29.0}

    # a file of another configuration is reported and ignored, not fatal
    other = SchedulerStateKeeper(_asha(reduction_factor=3), path)
    other.on_step_begin(iteration=0, trials=trials)
    assert "not restored" in capsys.readouterr().err


def test_the_keeper_mirrors_to_object_storage_and_a_resume_elsewhere_reads_it_back(tmp_path, capsys):
    """A search in object storage: each save is uploaded to <search>/scheduler_state.json in the bucket; a resume on
    another machine (Tune's unpickled keeper names the first machine's folder, relocated to an empty working copy)
    reads the records from the bucket and restores them."""
    pytest.importorskip("moto.server", reason="moto[server] is not installed")
    import pickle

    from s3server import BUCKET, s3_server

    from lensearch import storage

    search_uri = f"s3://{BUCKET}/lensearch/searches/asha-20260101-000000"
    trials = [_trial("a"), _trial("b")]
    first, elsewhere = tmp_path / "first", tmp_path / "elsewhere"
    first.mkdir()
    elsewhere.mkdir()
    with s3_server():
        sched = _asha()
        (keeper,) = keepers(sched, first, uri=search_uri)
        assert keeper.uri == f"{search_uri}/{STATE_FILE}"
        pickled = pickle.dumps(keeper)  # what tuner.pkl holds: the scheduler before any result
        keeper.on_step_begin(iteration=0, trials=trials)
        sched.on_trial_add(None, trials[0])
        sched.on_trial_result(None, trials[0], {"epoch": 1, "val_psnr": 30.0})
        keeper.on_trial_result(iteration=1, trials=trials, trial=trials[0], result={})
        assert json.loads(storage.read_bytes(keeper.uri)) == load(first / STATE_FILE)

        revived = pickle.loads(pickled)
        assert revived.path == first / STATE_FILE
        revived.relocate(elsewhere, f"{search_uri}/{STATE_FILE}")
        revived.scheduler.on_trial_add(None, trials[1])
        revived.on_step_begin(iteration=0, trials=trials)
        assert "restored the AsyncHyperBandScheduler records of 1 trial(s)" in capsys.readouterr().err
        assert (elsewhere / STATE_FILE).is_file()
        assert revived.scheduler.on_trial_result(None, trials[1], {"epoch": 1, "val_psnr": 29.0}) == STOP
        revived.on_trial_result(iteration=1, trials=trials, trial=trials[1], result={})
        assert dict(json.loads(storage.read_bytes(revived.uri))["brackets"][0])[1] == {"a": 30.0, "b": 29.0}


def test_what_is_covered():
    assert supported(_asha()) and supported(MedianStoppingRule(metric="m", mode="max"))
    hyperband = HyperBandScheduler(time_attr="epoch", metric="val_psnr", mode="max", max_t=8)
    assert not supported(hyperband) and keepers(hyperband, ".") == [] and keepers(None, ".") == []


# ------------------------------------------------------------------------------------------- a real search
@pytest.mark.ray
def test_a_resumed_search_stops_a_trial_below_the_restored_rung_cutoff(ray_cluster, tiny_h5, tmp_path, capfd):
    """ASHA (grace 1, rungs at reports 1 and 2), one trial at a time: a good point, then a deliberately broken one
    (Adam lr 0.05 throws the model far off bicubic at once). The search is interrupted (SIGINT, as Ctrl-C) once the
    good trial has completed, before the broken one reports; `--resume` then restores rung 1's record of the good
    trial, and the broken trial is stopped at its first report. Tune alone restored empty rungs and let it run."""
    import yaml
    from helpers import interrupt_tune
    from mlflow.tracking import MlflowClient

    from lensearch.cli import main

    points = [{"model": "rdn", "optimizer": "adam", "optimizer.adam.lr": lr} for lr in (2e-3, 0.05)]
    doc = {"name": "asharesume", "data": {"path": str(tiny_h5)}, "objective": {"metric": "val_psnr", "mode": "max"},
           "budget": {"num_samples": 2, "max_epochs": 2, "max_concurrent": 1},
           "early_stopping": {"name": "asha", "grace_period": 1, "reduction_factor": 2},
           "searcher": {"name": "random", "seed": 0, "initial_points": points}, "resources": {"workers": 1},
           "space": {"model": {"choice": {"rdn": {"num_features": 8, "num_blocks": 1, "num_layers": 2,
                                                  "growth": 8}}},
                     "optimizer": {"choice": {"adam": {"lr": {"categorical": [2e-3, 0.05]}}}},
                     "train": {"batch_size": 16, "patch_size": 32, "steps_per_epoch": 20, "val_max_images": 8}}}
    path = tmp_path / "asharesume.yaml"
    path.write_text(yaml.safe_dump(doc))
    store = tmp_path / "mlruns"
    # interrupted (Ctrl-C) once the first trial has completed; --address auto joins the session's cluster
    code, output = interrupt_tune(path, "--store", store, "--address", "auto", cwd=tmp_path)
    assert code == 130, output
    search_dir = next((store / "searches").glob("asharesume-*"))
    saved = load(search_dir / STATE_FILE)
    rungs = dict(saved["brackets"][0])
    assert set(rungs) == {1, 2} and len(rungs[1]) == 1, saved  # the good trial's record, nothing of the other
    (good_id, good_value), = rungs[1].items()

    capfd.readouterr()
    assert main(["tune", str(search_dir / "search.yaml"), "--resume", str(search_dir), "--address", "auto",
                 "--json"]) == 0
    out, err = capfd.readouterr()
    assert "restored the AsyncHyperBandScheduler records of 1 trial(s) from scheduler_state.json" in err, err
    outcome = json.loads([ln for ln in out.splitlines() if ln.startswith("{")][-1])  # (Ray may print too)
    rows = {t["trial_id"]: t for t in outcome["trials"]}
    assert len(rows) == 2 and rows[good_id]["state"] == "completed", rows
    (bad,) = [t for tid, t in rows.items() if tid != good_id]
    assert bad["params"]["optimizer.adam.lr"] == 0.05
    client = MlflowClient(outcome["tracking_uri"])
    history = [(m.step, m.value) for m in client.get_metric_history(bad["run_id"], "val_psnr")]
    assert len(history) == 1 and history[0][1] < good_value, (history, good_value)  # below the restored cutoff
    assert bad["state"] == "stopped early at epoch 1", bad["state"]
    after = dict(load(search_dir / STATE_FILE)["brackets"][0])
    assert after[1] == {good_id: good_value, bad["trial_id"]: pytest.approx(history[0][1])}


@pytest.mark.parametrize("grace, rf, max_t", [(1, 3, 27), (3, 3, 27), (1, 2, 8), (2, 3, 10), (1, 2.5, 20)])
def test_stop_epochs_are_the_rungs_of_rays_asha(grace, rf, max_t, tmp_path):
    """The epochs at which trials draw their sample grid (samplers.stop_epochs) are where Ray's ASHA decides."""
    from lensearch.search.samplers import make_scheduler, stop_epochs
    from lensearch.search.schema import parse_search

    search = parse_search({"name": "s", "objective": {"metric": "val_psnr", "mode": "max"},
                           "early_stopping": {"name": "asha", "grace_period": grace, "reduction_factor": rf},
                           "space": {"model": {"name": "espcn"}}}, tmp_path / "s.yaml")
    rungs = [m for m, _ in make_scheduler(search, max_t)._brackets[0]._rungs]
    assert stop_epochs(search, max_t) == sorted({math.ceil(m) for m in rungs} - {max_t})
    assert stop_epochs(parse_search({**search.raw, "early_stopping": {"name": "none"}}, search.path), max_t) == []
    assert stop_epochs(parse_search({**search.raw, "early_stopping": {"name": "median"}}, search.path), max_t) is None
