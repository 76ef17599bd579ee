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

from mlflow.tracking import MlflowClient

from lensearch.cli import main
from lensearch.search.tracking import default_tracking_uri


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ui_serves_the_default_store(tmp_path):
    store = tmp_path / "mlruns"
    client = MlflowClient(default_tracking_uri(store))
    client.create_experiment("smoke")
    port = _free_port()
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


def test_ui_without_a_store_is_a_one_line_error(tmp_path, capsys):
    assert main(["ui", "--store", str(tmp_path / "nothing")]) == 2
    assert "no MLflow database yet" in capsys.readouterr().err


def test_system_metrics_interval_is_checked_before_anything_starts(capsys):
    smoke = Path(__file__).resolve().parents[1] / "search_spaces" / "smoke.yaml"
    assert main(["tune", str(smoke), "--system-metrics", "0"]) == 2
    assert "--system-metrics 0: the sampling interval must be > 0 seconds" in capsys.readouterr().err
