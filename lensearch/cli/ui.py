"""``lensearch ui`` — the MLflow UI on the project's store.

The MLflow server runs in its own process group (it starts uvicorn workers and a huey job consumer of its
own). Whatever ends ``lensearch ui`` — Ctrl-C, ``kill PID`` (SIGTERM), ``kill -INT PID``, a closed terminal
(SIGHUP) — ends that whole group, so no server keeps the port or the database after it.

MLflow 3.17's UI opens every experiment in its GenAI view (a traces dashboard) unless the URL or the browser's
saved choice says ``workflowType=machine_learning``; the ``mlflow.experimentKind`` tag lensearch sets on its
experiments is not enough there. It also folds child runs (the trials) under their parent unless the runs are
sorted by something other than their start time. So ``lensearch ui`` prints, per search experiment, a link
that opens its runs table in the machine-learning view with the trials listed flat and ranked by the
search's primary objective.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

from lensearch.cli._args import port_number

STOP_GRACE_S = 10.0  # how long the server group gets to exit on SIGTERM before it is killed


def register(sub) -> None:
    p = sub.add_parser("ui", help="start the MLflow UI on the default store (compare runs, metrics, sample grids)",
                       description="Serve the MLflow UI on the store's database until Ctrl-C or `kill PID`; "
                                   "either ends the server and all the processes it started.")
    p.add_argument("--store", default="mlruns", type=Path, help="the store folder (default: ./mlruns)")
    p.add_argument("--tracking-uri", help="a tracking URI instead of the store's database")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=port_number, default=5000)
    p.set_defaults(func=run_ui)


def _stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM the server's process group, then SIGKILL whatever is left after :data:`STOP_GRACE_S`."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        pass
    try:  # the group may outlive its leader (workers still shutting down): make sure it is gone
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def experiment_url(base: str, experiment_id: str, metric: str = "val_psnr", mode: str = "max") -> str:
    """The runs table of an experiment in MLflow's machine-learning view, sorted by ``metric`` (best first),
    which lists child runs (trials) flat instead of folded under their parent."""
    order = quote(f"metrics.`{metric}`", safe="")
    return (f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"
            f"&orderByKey={order}&orderByAsc={'true' if mode == 'min' else 'false'}")


def search_links(tracking_uri: str, base: str, limit: int = 10) -> list[tuple[str, str]]:
    """(experiment name, link) for the experiments holding lensearch searches, most recently updated first."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    links = []
    for exp in client.search_experiments(order_by=["last_update_time DESC"], max_results=limit):
        runs = client.search_runs([exp.experiment_id], "tags.`lensearch.kind` = 'search'",
                                  order_by=["attributes.start_time DESC"], max_results=1)
        if not runs:
            continue
        metric, _, mode = runs[0].data.params.get("objective", "val_psnr max").split(",")[0].strip().partition(" ")
        links.append((exp.name, experiment_url(base, exp.experiment_id, metric, mode or "max")))
    return links


def run_ui(args) -> int:
    from lensearch.errors import expect
    from lensearch.search.tracking import default_tracking_uri

    store = args.store.resolve()
    uri = args.tracking_uri
    if uri is None:
        expect((store / "mlflow.db").exists(), f"{store}: no MLflow database yet (run `lensearch tune` first)")
        uri = default_tracking_uri(store)
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", args.host,
           "--port", str(args.port)]
    base = f"http://{args.host}:{args.port}"
    print(f"lensearch: MLflow UI on {base} (store {uri}); Ctrl-C to stop", file=sys.stderr)
    try:
        links = search_links(uri, base)
    except Exception as err:  # the links are a convenience: the UI starts without them
        links = []
        print(f"lensearch: (could not list the searches: {err})", file=sys.stderr)
    for name, url in links:
        print(f"lensearch: search experiment '{name}': {url}", file=sys.stderr)
    sys.stderr.flush()

    def stop(signum, frame):
        raise KeyboardInterrupt  # unwinds to the finally below, in the main thread

    # its own session: the server and its workers form one group that we end as a whole, and a Ctrl-C in
    # the terminal reaches only us (we then stop the group in order)
    # SIGINT too: a shell starts background jobs with SIGINT ignored, yet `kill -INT PID` must stop the UI
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    proc = None
    try:
        proc = subprocess.Popen(cmd, env=os.environ.copy(), start_new_session=True)
        return proc.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        for sig in previous:  # a second Ctrl-C or kill must not cut the clean-up short
            signal.signal(sig, signal.SIG_IGN)
        try:
            if proc is not None:
                _stop_group(proc)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
