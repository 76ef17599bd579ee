"""Search benchmarks, measured side by side in one run.

1. Fixed per-trial overhead: a trial's wall time (Tune's ``time_total_s`` at its last report) minus the time
   its epochs spent training and validating (sum of ``epoch_time_s``), for 1-worker (direct) and
   2-worker (Ray Train DDP) trials.
2. ASHA + TPE vs random search without early stopping, on one small fixed problem: random search's
   best val_psnr B after N trials x E epochs; then how many epochs (summed over all trials, in the order
   results arrived) ASHA + TPE needed before any trial reached B. Goal: <= 1/3 of N x E.

    python experiments/benchmarks/bench_search.py [--trials 12] [--epochs 4] [--count 384]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import yaml
from ray import tune

from lensearch.data.simulate import simulate_to_h5
from lensearch.search.schema import load_search
from lensearch.search.tuner import SearchOptions, run_search
from lensearch.training.cluster import connect

SPACE = {
    "model": {"choice": {
        "rdn": {"num_features": {"categorical": [8, 16]}, "num_blocks": {"int": [1, 3]}, "num_layers": 2,
                "growth": 8},
        "srresnet": {"num_blocks": {"int": [1, 4]}, "num_features": {"categorical": [8, 16]}},
    }},
    "normalization": {"choice": {"minmax": {}, "asinh": {"softening": {"logfloat": [0.01, 1.0]}}}},
    "optimizer": {"choice": {"adam": {"lr": {"logfloat": [1e-5, 1e-2]}}}},
    "train": {"batch_size": 16},
}


class Recorder(tune.Callback):
    def __init__(self):
        self.results: list[dict] = []

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.results.append({"trial": trial.trial_id, "timestamp": result["timestamp"], "epoch": result["epoch"],
                             "val_psnr": result["val_psnr"], "time_total_s": result["time_total_s"],
                             "epoch_time_s": result["epoch_time_s"]})


def _search(tmp: Path, data: Path, name: str, trials: int, epochs: int, scheduler: dict, searcher: dict,
            workers: int = 1) -> list[dict]:
    doc = {"name": name, "data": {"path": str(data)}, "objective": {"metric": "val_psnr", "mode": "max"},
           "budget": {"num_samples": trials, "max_epochs": epochs}, "scheduler": scheduler, "searcher": searcher,
           "resources": {"workers": workers}, "space": SPACE}
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    rec = Recorder()
    run_search(load_search(path), SearchOptions(store=tmp / "mlruns", root=tmp, quiet=True, callbacks=[rec]))
    return rec.results


def overhead(results: list[dict]) -> float:
    """Mean over trials of (wall time at the last report - summed epoch time)."""
    per_trial: dict[str, list[dict]] = {}
    for r in results:
        per_trial.setdefault(r["trial"], []).append(r)
    values = [rs[-1]["time_total_s"] - sum(x["epoch_time_s"] for x in rs) for rs in per_trial.values()]
    return sum(values) / len(values)


def epochs_to_reach(results: list[dict], target: float) -> int | None:
    spent = 0
    for r in sorted(results, key=lambda r: r["timestamp"]):
        spent += 1
        if r["val_psnr"] >= target:
            return spent
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=12)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--count", type=int, default=384)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0], help="searcher seeds for part [2]")
    ap.add_argument("--skip-overhead", action="store_true", help="only part [2]")
    args = ap.parse_args()
    handle = connect()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            data = tmp / "tiny.h5"
            simulate_to_h5(data, "tiny", args.count, 0, workers=1, progress=False)
            if not args.skip_overhead:
                one = _search(tmp, data, "overhead1", 2, 2, {"name": "none"}, {"name": "random", "seed": 0},
                              workers=1)
                two = _search(tmp, data, "overhead2", 2, 2, {"name": "none"}, {"name": "random", "seed": 0},
                              workers=2)
                print(f"[1] fixed per-trial overhead: 1 worker (direct) {overhead(one):.1f} s | "
                      f"2 workers (Ray Train DDP) {overhead(two):.1f} s")
            ratios = []
            for seed in args.seeds:
                rnd = _search(tmp, data, f"random{seed}", args.trials, args.epochs, {"name": "none"},
                              {"name": "random", "seed": seed})
                best = max(r["val_psnr"] for r in rnd)
                budget = args.trials * args.epochs
                asha = _search(tmp, data, f"asha_tpe{seed}", args.trials * 2, args.epochs,
                               {"name": "asha", "grace_period": 1, "reduction_factor": 3},
                               {"name": "tpe", "seed": seed, "startup_trials": max(2, args.trials // 4)})
                needed = epochs_to_reach(asha, best)
                ratios.append(needed / budget if needed else float("inf"))
                shown = (f"reached it after {needed} epochs, ratio {needed / budget:.2f}" if needed
                         else "never reached it")
                print(f"[2] seed {seed}: random search best val_psnr {best:.3f} after {len(rnd)} epochs "
                      f"({args.trials} trials x {args.epochs}) | ASHA+TPE {shown} (goal <= 0.33);"
                      f" ASHA+TPE best {max(r['val_psnr'] for r in asha):.3f} in {len(asha)} epochs", flush=True)
            if len(ratios) > 1:
                finite = sorted(ratios)
                print(f"[2] ratios over seeds {args.seeds}: {', '.join(f'{r:.2f}' for r in ratios)}; "
                      f"median {finite[len(finite) // 2]:.2f}")
    finally:
        handle.close()


if __name__ == "__main__":
    main()
