"""`lensearch ui`: the MLflow UI really serves the project's store (started and stopped by its own handle)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from lensearch.cli import main
from lensearch.search.tracking import default_tracking_uri
from helpers import free_port


def test_ui_serves_the_default_store(tmp_path):
    store = tmp_path / "mlruns"
    client = MlflowClient(default_tracking_uri(store))
    client.create_experiment("smoke")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "lensearch", "ui", "--store", str(store), "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/search?max_results=10"
        deadline, body = time.time() + 90, None
        while time.time() < deadline and body is None:
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    body = json.loads(response.read())
            except OSError:
                assert proc.poll() is None, "the UI process exited"
                time.sleep(0.5)
        assert body is not None, "the UI did not answer within 90 s"
        assert "smoke" in {e["name"] for e in body["experiments"]}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the UI and the server workers it started
        proc.wait(timeout=30)


def _proc_table() -> dict[int, tuple[int, int, str]]:
    """pid -> (parent pid, process group, state) of every live process, from /proc (no psutil here)."""
    table = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            table[int(entry)] = (int(fields[1]), int(fields[2]), fields[0])
    return table


def _family(pid: int) -> set[int]:
    """``pid``'s descendants and every process in their process groups (the server's workers)."""
    table = _proc_table()
    found, frontier = set(), {pid}
    while frontier:
        found |= frontier
        frontier = {p for p, (ppid, _, _) in table.items() if ppid in frontier} - found
    groups = {table[p][1] for p in found if p in table and p != pid}
    return (found | {p for p, (_, pgrp, _) in table.items() if pgrp in groups}) - {pid}


def _alive(pids: set[int]) -> set[int]:
    table = _proc_table()
    return {p for p in pids if p in table and table[p][2] != "Z"}


def _answers(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_ui_stopped_by_its_pid_ends_the_server_and_all_its_processes(tmp_path, sig):
    """`kill PID` / `kill -INT PID` on `lensearch ui` (not on its group) leaves no MLflow server behind."""
    store = tmp_path / "mlruns"
    MlflowClient(default_tracking_uri(store)).create_experiment("e")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "lensearch", "ui", "--store", str(store), "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    family: set[int] = set()
    try:
        deadline = time.time() + 90
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                assert proc.poll() is None, "the UI process exited"
                time.sleep(0.5)
        else:
            pytest.fail("the UI did not answer within 90 s")
        family = _family(proc.pid)
        assert family, "the UI runs the MLflow server as a child process"
        os.kill(proc.pid, sig)
        assert proc.wait(timeout=30) == 0
        deadline = time.time() + 15
        while (_alive(family) or _answers(port)) and time.time() < deadline:
            time.sleep(0.2)
        assert not _answers(port), "the port still answers"
        assert not _alive(family), {p: open(f"/proc/{p}/cmdline").read() for p in _alive(family)}
    finally:
        for pid in _alive(family | {proc.pid}):
            os.kill(pid, signal.SIGKILL)
        proc.wait(timeout=30)


def test_ui_without_a_store_is_a_one_line_error(tmp_path, capsys):
    assert main(["ui", "--store", str(tmp_path / "nothing")]) == 2
    assert "no MLflow database yet" in capsys.readouterr().err


def test_system_metrics_interval_is_checked_before_anything_starts(capsys):
    smoke = Path(__file__).resolve().parents[2] / "search_spaces" / "smoke.yaml"
    assert main(["tune", str(smoke), "--system-metrics", "0"]) == 2
    assert "--system-metrics 0: the sampling interval must be > 0 seconds" in capsys.readouterr().err
