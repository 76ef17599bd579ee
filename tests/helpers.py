"""Helpers shared by several test modules (plain functions and constants; fixtures live in conftest.py).

Test modules import them as ``from helpers import ...`` (pytest puts tests/ on the import path); no test
module imports another.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from lensearch.data.transforms import build_normalization
from lensearch.models import registry
from lensearch.training.checkpoint import save_checkpoint
from lensearch.training.config import resolve_run_config

__all__ = ["RDN", "REPO", "TWO_NODES", "fake_search", "free_port", "interrupt_tune", "skimage_psnr"]

RDN = {"num_features": 8, "num_blocks": 1, "num_layers": 2, "growth": 8}
REPO = Path(__file__).resolve().parents[1]


def fake_search(store: Path, name: str, trials: dict, data: Path, objective=None, epochs: dict | None = None) -> Path:
    """A search directory as the tuner leaves it: search.yaml, budget.json (max_epochs 2), mlflow_runs.json
    (each trial's last reported epoch: ``epochs``, default 2 = completed) + trials/<id>/checkpoints/best.pt.

    ``trials``: ``{trial_id: (model, hyperparameters, normalization, metrics)}``; weights are untrained
    (seeded), so the exported model is deterministic. The zero-initialised output conv of a bicubic-skip
    model is re-drawn (default init): otherwise the exported network would compute plain bicubic and the
    parity checks would not see its body.
    """
    search_dir = store / "searches" / f"{name}-20250101-000000"
    search_dir.mkdir(parents=True)
    doc = {"name": name, "objective": objective or {"metric": "val_psnr", "mode": "max"},
           "space": {"model": {"choice": {"rdn": {}}}}}
    (search_dir / "search.yaml").write_text(yaml.safe_dump(doc))
    (search_dir / "budget.json").write_text(json.dumps({"num_samples": len(trials), "max_epochs": 2}))
    logged = {tid: (epochs or {}).get(tid, 2) for tid in trials}
    (search_dir / "mlflow_runs.json").write_text(json.dumps({"parent": None, "trials": {}, "finished": list(trials),
                                                             "logged": logged}))
    for trial_id, (model, params, norm, metrics) in trials.items():
        torch.manual_seed(0)
        net = registry.build(model, scale=2, **params)
        for m in net.modules():
            if isinstance(m, torch.nn.Conv2d) and not m.weight.any():
                m.reset_parameters()
        config = resolve_run_config({"data": {"path": str(data)}, "model": {"name": model, **params},
                                     "normalization": norm})
        payload = {"epoch": 1, "best": metrics.get("val_psnr"), "model": net.state_dict(), "ema": None,
                   "eval_model": net.state_dict(), "model_name": model,
                   "model_params": registry.resolve_params(model, params), "kind": registry.get(model).kind,
                   "scale": 2, "in_channels": 1, "normalization": build_normalization(norm).state(),
                   "config": config, "metrics": metrics, "data_path": str(data)}
        save_checkpoint(payload, search_dir / "trials" / trial_id / "checkpoints" / "best.pt")
    return search_dir


def skimage_psnr(pred, ref) -> float:
    """Mean PSNR recomputed independently of lensearch.metrics: numpy float64 + scikit-image, each pair
    scaled by the reference image's range (the project's convention, data_range 1)."""
    from skimage.metrics import peak_signal_noise_ratio

    values = []
    for p, r in zip(np.asarray(pred, np.float64), np.asarray(ref, np.float64)):
        lo, span = r.min(), r.max() - r.min()
        values.append(peak_signal_noise_ratio((r - lo) / span, (p - lo) / span, data_range=1.0))
    return float(np.mean(values))


# A two-node Ray cluster (ray.cluster_utils, 1 CPU per node) in its own process: run it with
# `python -c TWO_NODES` and a stdin pipe; it prints the address, and shuts down when stdin closes.
TWO_NODES = """
import sys
from ray.cluster_utils import Cluster
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
cluster.add_node(num_cpus=1)
cluster.wait_for_nodes()
print(cluster.address, flush=True)
sys.stdin.read()          # until the test closes our stdin
cluster.shutdown()
"""


@contextlib.contextmanager
def two_nodes_and_mlflow(root: Path, env: dict):
    """A two-node Ray cluster (:data:`TWO_NODES`, in a child process) and an ``mlflow server`` on a free port
    (sqlite and artifacts under ``root``), started side by side with ``env``; yields ``(Ray address, tracking
    URI)`` once both are up, and ends both on exit (the server by its process group: uvicorn and its workers)."""
    import urllib.request

    port = free_port()
    server = subprocess.Popen([str(Path(sys.executable).with_name("mlflow")), "server", "--host", "127.0.0.1",
                               "--port", str(port), "--backend-store-uri", f"sqlite:///{root / 'server.db'}",
                               "--default-artifact-root", (root / "artifacts").as_uri(), "--workers", "1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, env=env)
    nodes = subprocess.Popen([sys.executable, "-c", TWO_NODES], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True, env=env)
    try:
        address = nodes.stdout.readline().strip()
        assert address, "the two-node cluster did not start"
        uri = f"http://127.0.0.1:{port}"
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{uri}/health", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        yield address, uri
    finally:
        nodes.stdin.close()
        try:
            nodes.wait(timeout=60)
        except subprocess.TimeoutExpired:
            nodes.kill()
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (for a server a test starts)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def interrupt_tune(*args: str, cwd: Path, env: dict | None = None, sig: int = signal.SIGINT,
                   timeout: float = 240.0) -> tuple[int, str]:
    """Run ``python -m lensearch tune *args`` (this checkout on PYTHONPATH, output unbuffered, stdout and stderr
    together), send it ``sig`` (Ctrl-C's SIGINT, or SIGTERM) once the first trial has completed (its progress
    line ``[   12.3s] trial ... completed``), and wait for it to end; returns its exit status and whole output.
    ``timeout``: seconds to wait for that line; the process is killed if it outlives the test."""
    proc = subprocess.Popen([sys.executable, "-m", "lensearch", "tune", *map(str, args)], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO), **(env or {})})
    lines, deadline = [], time.time() + timeout
    try:
        for line in proc.stdout:
            lines.append(line)
            if " completed" in line and line.startswith("["):
                proc.send_signal(sig)
                break
            assert time.time() < deadline, "".join(lines)
        lines.append(proc.communicate(timeout=120)[0])
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, "".join(lines)
