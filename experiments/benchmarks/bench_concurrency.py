"""Threads vs concurrent trials on this machine: one trial with 2 threads, or two 1-thread trials at once?

Runs the lensearch training loop (``training.loop.fit``, patches, step-counted epochs) on the tiny preset for
a fixed number of optimizer steps, (a) in one process with 2 threads, (b) in two processes with 1 thread each
at the same time, and prints the aggregate optimizer steps per second of each, per model. The shipped CPU
profiles run 1-thread trials side by side when (b) wins. (DDP with 2 workers is measured in
bench_training.py [3]: ~1.1x one 2-thread process, after ~15 s more start-up.)

    python experiments/benchmarks/bench_concurrency.py [--steps 300]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import json, sys, tempfile, time, torch
from pathlib import Path
from lensearch.training.config import resolve_run_config
from lensearch.training.context import RunContext
from lensearch.training.loop import fit
from lensearch.training.runner import prepare_data
threads, data, model, steps = int(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(threads)
run = prepare_data({"path": data, "preset": None}, Path.cwd(), progress=False).replace(dir=tempfile.mkdtemp())
cfg = resolve_run_config({"model": model, "data": {"path": data}, "optimizer": {"name": "adam", "lr": 1e-3},
                          "train": {"epochs": 1, "batch_size": 16, "patch_size": 48, "steps_per_epoch": steps}})
out = []
fit(cfg, run, RunContext(torch.device("cpu"), report_fn=out.append))
print(json.dumps({"train_seconds": out[-1]["train_seconds"], "steps": out[-1]["steps"]}))
"""

MODELS = {"espcn 16x6": {"name": "espcn", "num_features": 16, "num_layers": 6},
          "span 16x2": {"name": "span", "num_features": 16, "num_blocks": 2},
          "rdn 16x2": {"name": "rdn", "num_features": 16, "num_blocks": 2, "num_layers": 2, "growth": 8}}


def _launch(threads: int, data: Path, model: dict, steps: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", CHILD, str(threads), str(data), json.dumps(model), str(steps)],
                            stdout=subprocess.PIPE, text=True)


def _result(proc: subprocess.Popen) -> dict:
    out, _ = proc.communicate()
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        from lensearch.data.simulate import simulate_to_h5

        data = Path(tmp) / "tiny.h5"
        simulate_to_h5(data, "tiny", 256, 0, workers=1, progress=False)
        print(f"{'model':<14}{'1 trial x 2 threads':>22}{'2 trials x 1 thread':>22}{'ratio':>8}   (optimizer steps/s, all trials)")
        for name, model in MODELS.items():
            one = _result(_launch(2, data, model, args.steps))
            a, b = _launch(1, data, model, args.steps), _launch(1, data, model, args.steps)
            ra, rb = _result(a), _result(b)
            single = one["steps"] / one["train_seconds"]
            pair = ra["steps"] / ra["train_seconds"] + rb["steps"] / rb["train_seconds"]
            print(f"{name:<14}{single:>22.1f}{pair:>22.1f}{pair / single:>8.2f}", flush=True)


if __name__ == "__main__":
    main()
