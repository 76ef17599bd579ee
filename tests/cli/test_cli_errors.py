"""Bad input at the command line: one line naming the culprit, exit status 2, nothing started or written.

No Ray here: every case must be refused before Ray would start (that is the point).
"""

from __future__ import annotations

import socket

import pytest
import yaml

from lensearch.cli import main
from lensearch.errors import UserError
from lensearch.search.schema import load_search
from lensearch.training.config import load_run_config

SPACE = {"name": "tiny", "budget": {"num_samples": 1, "max_epochs": 1},
         "space": {"model": {"name": "rdn", "num_features": 8, "num_blocks": 1, "num_layers": 2, "growth": 8},
                   "train": {"batch_size": 8, "steps_per_epoch": 2}}}


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err and "\n" not in err and "Traceback" not in err, err
    return err


def _space(tmp_path, doc=SPACE, name="space.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.mark.parametrize("argv, flag, got", [
    (["tune", "S.yaml", "--max-epochs", "-1"], "--max-epochs", "-1"),
    (["tune", "S.yaml", "--num-samples", "0"], "--num-samples", "0"),
    (["tune", "S.yaml", "--workers", "0"], "--workers", "0"),
    (["tune", "S.yaml", "--time-budget", "-5"], "--time-budget", "-5"),
    (["tune", "S.yaml", "--time-budget", "nan"], "--time-budget", "nan"),
    (["tune", "S.yaml", "--max-epochs", "2.5"], "--max-epochs", "2.5"),
    (["train", "R.yaml", "--epochs", "0"], "--epochs", "0"),      # 0 was read as "not given"
    (["train", "R.yaml", "--epochs", "-1"], "--epochs", "-1"),    # named the flag, not budget.max_epochs
    (["train", "R.yaml", "--workers", "0"], "--workers", "0"),
    (["simulate", "--out", "x.h5", "--count", "0"], "--count", "0"),
    (["simulate", "--out", "x.h5", "--workers", "-2"], "--workers", "-2"),
    (["space", "sample", "S.yaml", "-n", "0"], "-n/--num", "0"),
    (["data", "import-deeplense", "D", "--out", "x.h5", "--val-fraction", "1.5"], "--val-fraction", "1.5"),
    (["baseline", "x.h5", "--batch-size", "0"], "--batch-size", "0"),
    (["upscale", "M", "x.npy", "-o", "o", "--batch-size", "-1"], "--batch-size", "-1"),
    (["ui", "--port", "70000"], "--port", "70000"),
])
def test_bad_numbers_are_refused_when_parsed(argv, flag, got, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    err = _one_error_line(capsys)
    assert err.startswith(f"lensearch {argv[0]}") and f"{flag}: expected " in err and repr(got) in err, err
    assert list(tmp_path.iterdir()) == []  # no store, no search directory, no data file


def test_debug_shows_the_traceback_of_a_user_error_before_or_after_the_command(tmp_path, capsys):
    missing = str(tmp_path / "missing.yaml")
    assert main(["space", "show", missing]) == 2
    assert "no such search-space file" in _one_error_line(capsys)
    for argv in (["--debug", "space", "show", missing], ["space", "show", missing, "--debug"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "Traceback (most recent call last)" in err and "UserError" in err
        assert err.strip().splitlines()[-1].startswith("lensearch space: error: ")


def test_unquoted_exponent_numbers_are_floats_in_spaces_and_run_files(tmp_path):
    # YAML 1.1 (PyYAML) reads `1e-3` as the string '1e-3'
    path = tmp_path / "s.yaml"
    path.write_text("budget: {time_budget_s: 6e2}\n"
                    "space:\n  model: {name: rdn}\n"
                    "  optimizer: {choice: {adam: {lr: {logfloat: [1e-4, 1E-2]}}, sgd: {lr: 1e-3}}}\n")
    search = load_search(path)
    assert search.budget["time_budget_s"] == 600.0
    rows = {name: values for name, values, _ in search.space.describe()}
    assert "0.0001" in str(rows["optimizer.adam.lr"]) and "0.01" in str(rows["optimizer.adam.lr"])
    assert search.space.materialize({"model": "rdn", "optimizer": "sgd"})["optimizer"]["lr"] == 0.001
    run = tmp_path / "run.yaml"
    run.write_text("model: {name: rdn}\noptimizer: {name: adam, lr: 1e-3, weight_decay: 5E-5}\ntrain: {epochs: 1}\n")
    loaded = load_run_config(run)
    assert loaded["optimizer"]["lr"] == 0.001 and isinstance(loaded["optimizer"]["lr"], float)
    assert loaded["optimizer"]["weight_decay"] == 5e-5
    run.write_text("model: {name: rdn}\noptimizer: {name: adam, lr: '1e-3'}\n")  # quoted: still a string
    assert load_run_config(run)["optimizer"]["lr"] == "1e-3"


@pytest.mark.parametrize("doc, expected", [
    ({**SPACE, "budget": {"max_epoch": 3}}, "budget.max_epoch: unknown key (did you mean 'max_epochs'?)"),
    ({**SPACE, "schedular": {"name": "asha"}}, "schedular: unknown top-level key (did you mean 'scheduler'?)"),
    ({**SPACE, "space": {"model": {"name": "rdn", "num_block": 2}}},
     "model.rdn.num_block: unknown parameter (did you mean 'num_blocks'?)"),
    ({**SPACE, "space": {"model": {"name": "rdn"}, "optimiser": {"name": "adam"}}},
     "space.optimiser: unknown section (did you mean 'optimizer'?)"),
    ({**SPACE, "budget": {"zzz": 3}}, "budget.zzz: unknown key; valid keys:"),  # nothing close: no guess
])
def test_unknown_keys_suggest_the_closest_valid_one(doc, expected, tmp_path):
    with pytest.raises(UserError) as err:
        load_search(_space(tmp_path, doc))
    assert expected in str(err.value)


def test_run_file_typos_suggest_the_closest_key(tmp_path, capsys):
    run = tmp_path / "run.yaml"
    run.write_text("model: {name: rdn}\ntrain: {epoch: 2}\n")
    assert main(["train", str(run)]) == 2
    assert "train.epoch: unknown key (did you mean 'epochs'?)" in _one_error_line(capsys)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the block ends: nothing listens there


@pytest.mark.parametrize("flag, value, expected", [
    ("--address", "127.0.0.1:{port}", "no Ray cluster answers there"),
    ("--tracking-uri", "http://127.0.0.1:{port}", "no MLflow server answers there"),
    ("--tracking-uri", "sqlite:///{tmp}/no/such/dir/mlflow.db", "the folder {tmp}/no/such/dir does not exist"),
])
def test_unreachable_cluster_or_tracking_server_is_one_line_before_anything_starts(flag, value, expected,
                                                                                     tmp_path, capsys):
    path = _space(tmp_path)
    store = tmp_path / "mlruns"
    value = value.format(port=_closed_port(), tmp=tmp_path)
    assert main(["tune", str(path), "--store", str(store), flag, value, "--quiet"]) == 2
    err = _one_error_line(capsys)
    assert f"{flag} {value}: {expected.format(tmp=tmp_path)}" in err, err
    assert not store.exists()  # no search directory, no MLflow database


def test_a_data_file_that_is_not_hdf5_is_refused_before_ray_starts(tmp_path, capsys):
    bad = tmp_path / "bad.h5"
    bad.write_text("not hdf5")
    store = tmp_path / "mlruns"
    assert main(["tune", str(_space(tmp_path)), "--data", str(bad), "--store", str(store)]) == 2
    assert f"--data {bad}: not an HDF5 file" in _one_error_line(capsys)
    assert main(["data", "info", str(bad)]) == 2
    assert "not an HDF5 file" in _one_error_line(capsys)
    assert not store.exists()
