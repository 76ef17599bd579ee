"""What a search records and refuses before Ray starts: one search per name, resume reusing its own store and
tracking URI, the data digest, seeded sampling, and errored trials as one line. No Ray cluster here."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import traceback
from pathlib import Path

import pytest
import yaml

from lensearch.cli import main
from lensearch.search.schema import load_search
from lensearch.search.layout import ORIGIN, hold_search_name, resolve_search_dir, resume_command
from lensearch.search.leaderboard import leaderboard
from lensearch.search.results import SearchOutcome, TrialRow
from lensearch.search.samplers import make_searcher
from lensearch.search.tracking import error_summary, file_digest

SPACE = {"name": "rec", "budget": {"num_samples": 4, "max_epochs": 1},
         "searcher": {"name": "tpe", "seed": 3, "startup_trials": 2},
         "space": {"model": {"choice": {"rdn": {"num_blocks": {"int": [1, 4]}}, "srresnet": {}}},
                   "optimizer": {"choice": {"adam": {"lr": {"logfloat": [1e-4, 1e-2]}}}},
                   "train": {"batch_size": {"categorical": [8, 16]}}}}


def _write(tmp_path: Path, doc=SPACE, name="rec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc))
    return path


def _fake_search(store: Path, name: str, origin: dict | None = None) -> Path:
    """A search directory as `lensearch tune` leaves it (just what is read before Ray starts)."""
    search_dir = store / "searches" / f"{name}-20260101-120000"
    search_dir.mkdir(parents=True)
    (search_dir / "search.yaml").write_text(yaml.safe_dump(SPACE))
    if origin is not None:
        (search_dir / ORIGIN).write_text(json.dumps(origin))
    return search_dir


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err and "\n" not in err, err
    return err


def test_a_second_search_of_the_same_name_is_refused_while_the_first_runs(tmp_path, capsys):
    store = tmp_path / "mlruns"
    old = _fake_search(store, "rec")
    _fake_search(store, "rec-big")  # another name that merely starts the same way does not count
    search = load_search(_write(tmp_path))
    # a finished (or killed) earlier search of the name does not stop a new one: a new directory beside it
    path, resuming = resolve_search_dir(search, store / "searches", False)
    assert not resuming and path.parent == old.parent and path.name.startswith("rec-2") and path != old
    held = hold_search_name(store / "searches", search, resuming=False)  # as the running search holds it
    try:
        assert main(["tune", str(_write(tmp_path)), "--store", str(store)]) == 2
        err = _one_line(capsys)
        assert f"a search named 'rec' is running in another process (pid {os.getpid()})" in err
    finally:
        held.close()
    assert sorted(p.name for p in (store / "searches").iterdir()
                  if not p.name.startswith(".")) == ["rec-20260101-120000", "rec-big-20260101-120000"]
    hold_search_name(store / "searches", search, resuming=False).close()  # released: free again


def test_resume_refuses_a_store_or_tracking_uri_other_than_its_own(tmp_path, capsys):
    store = tmp_path / "mlruns"
    uri = f"sqlite:///{store / 'mlflow.db'}"
    search_dir = _fake_search(store, "rec", {"name": "rec", "store": str(store), "tracking_uri": uri,
                                             "data_path": str(tmp_path / "d.h5")})
    args = ["tune", str(search_dir / "search.yaml"), "--resume", str(search_dir)]
    other = tmp_path / "elsewhere"
    other.mkdir()
    assert main([*args, "--tracking-uri", f"sqlite:///{other / 'x.db'}"]) == 2
    err = _one_line(capsys)
    assert f"the search in {search_dir} logs to {uri}" in err and "leave --tracking-uri out" in err
    assert main([*args, "--store", str(other)]) == 2
    err = _one_line(capsys)
    assert f"--store {other}: the search in {search_dir} belongs to the store {store}" in err
    assert list(other.iterdir()) == []


def test_the_resume_hint_is_a_command_that_works_from_anywhere(tmp_path):
    search_dir = tmp_path / "a dir" / "searches" / "rec-20260101-120000"
    words = shlex.split(resume_command(search_dir, address="auto"))
    assert words == ["lensearch", "tune", str(search_dir / "search.yaml"), "--resume", str(search_dir),
                     "--address", "auto"]
    assert all(os.path.isabs(w) for w in (words[2], words[4]))
    # a search in object storage: another machine has no working copy, so the file is the bucket's copy
    uri = "s3://bucket/pre/searches/rec-20260101-120000"
    words = shlex.split(resume_command(search_dir, search_uri=uri))
    assert words == ["lensearch", "tune", f"{uri}/search.yaml", "--resume", uri]


def test_the_data_digest_is_the_file_sha256_and_is_cached_by_size_and_mtime(tmp_path):
    data = tmp_path / "d.h5"
    data.write_bytes(os.urandom(3 * 1024 + 17))
    cache = tmp_path / "digests.json"
    expected = hashlib.sha256(data.read_bytes()).hexdigest()
    assert file_digest(data, cache, chunk=1024) == expected  # several chunks
    record = json.loads(cache.read_text())
    record[str(data.resolve())]["sha256"] = "cached"  # proves the second call reads the cache...
    cache.write_text(json.dumps(record))
    assert file_digest(data, cache) == "cached"
    data.write_bytes(data.read_bytes() + b"x")  # ...and a changed file is hashed again
    assert file_digest(data, cache) == hashlib.sha256(data.read_bytes()).hexdigest()


def _suggestions(search, n: int) -> list[dict]:
    searcher = make_searcher(search, max_epochs=1)
    out = []
    for i in range(n):
        out.append(searcher.suggest(f"t{i}"))
        searcher.on_trial_complete(f"t{i}", {"val_psnr": 30.0 + (i * 7) % 5, "epoch": 1})
    return out


def test_the_same_file_and_seed_sample_the_same_configurations(tmp_path):
    search = load_search(_write(tmp_path))
    first = _suggestions(search, 5)  # random start-up trials and TPE-guided ones
    assert first == _suggestions(load_search(_write(tmp_path)), 5)
    reseeded = load_search(_write(tmp_path, {**SPACE, "searcher": {**SPACE["searcher"], "seed": 4}}, "b.yaml"))
    assert _suggestions(reseeded, 5) != first


def test_an_errored_trial_is_one_line_with_the_innermost_type_and_message():
    from ray.exceptions import RayTaskError

    from lensearch.training.steps import NonFiniteLoss

    try:
        raise NonFiniteLoss("non-finite loss (nan) at epoch 2, step 7: training diverged")
    except NonFiniteLoss as err:
        wrapped = RayTaskError("trial_function", traceback.format_exc(), err).as_instanceof_cause()
    assert len(str(wrapped).splitlines()) > 3  # what Ray would print
    line = error_summary(wrapped)
    assert line == "NonFiniteLoss: non-finite loss (nan) at epoch 2, step 7: training diverged"
    assert error_summary(FloatingPointError("loss became NaN\n at epoch 2")) == \
        "FloatingPointError: loss became NaN at epoch 2"
    # a Ray error whose cause did not survive pickling: the last line of its traceback, type shortened
    text = "Traceback (most recent call last):\n  File x\nlensearch.training.steps.NonFiniteLoss: boom at epoch 1"
    assert error_summary(RayTaskError("f", text, None)) == "NonFiniteLoss: boom at epoch 1"

    rows = [TrialRow("t_ok", "completed", 2, {"val_psnr": 31.0}, {}, None, None),
            TrialRow("t_bad", f"errored: {line}", 2, {"val_psnr": 30.0}, {}, None, None)]
    board = leaderboard(SearchOutcome("s", Path("."), [("val_psnr", "max")], rows, None, "", 0.0))
    assert f"t_bad: errored: {line}" in board.splitlines()  # whole, though the column cuts it
    assert "errored: RayTaskError" not in board


def test_the_tracker_pickles_its_search_info_as_the_plain_mapping_it_always_was(tmp_path):
    """Tune keeps the MLflow callback pickled in the search's ``tune/`` state and ``--resume`` uses that copy: the
    SearchInfo goes in as a dict, and a tracker pickled before SearchInfo existed (a dict without the remote-store
    keys) comes back with a SearchInfo."""
    import pickle

    from lensearch.search.tracking import MLflowTracker, SearchInfo

    info = SearchInfo(name="rec", max_epochs=3, trials_dir=tmp_path / "trials", objectives=[("val_psnr", "max")],
                      params={"data": "d.h5"}, artifacts=[tmp_path / "search.yaml"], tags={"t": "v"},
                      log_checkpoints=False, system_metrics=2.0, max_retries=2)
    tracker = MLflowTracker("sqlite:///unused.db", "rec", tmp_path, info)
    state = tracker.__getstate__()
    assert state["info"] == info.to_dict() and isinstance(state["info"], dict)
    assert pickle.loads(pickle.dumps(tracker)).info == info

    old = {"name": "rec", "max_epochs": 3, "trials_dir": str(tmp_path / "trials"), "objectives": [("val_psnr", "max")],
           "log_checkpoints": True, "system_metrics": None, "params": {"data": "d.h5"}, "artifacts": [],
           "tags": {}, "max_retries": 1}
    legacy = MLflowTracker.__new__(MLflowTracker)
    legacy.__setstate__({**state, "info": old})
    assert legacy.info == SearchInfo(name="rec", max_epochs=3, trials_dir=tmp_path / "trials",
                                     objectives=[("val_psnr", "max")], params={"data": "d.h5"}, max_retries=1)
    assert legacy.info.trials_uri is None and legacy.info.log_checkpoints
