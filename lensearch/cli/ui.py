"""``lensearch ui`` — the MLflow UI on the project's store."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("ui", help="start the MLflow UI on the default store (compare runs, metrics, sample grids)")
    p.add_argument("--store", default="mlruns", type=Path, help="the store folder (default: ./mlruns)")
    p.add_argument("--tracking-uri", help="a tracking URI instead of the store's database")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5000)
    p.set_defaults(func=run_ui)


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
    print(f"lensearch: MLflow UI on http://{args.host}:{args.port} (store {uri}); Ctrl-C to stop", file=sys.stderr)
    try:
        return subprocess.call(cmd, env=os.environ.copy())
    except KeyboardInterrupt:
        return 0
