"""Search benchmarks, measured side by side in one run.

1. Fixed per-trial overhead: a trial's wall time (Tune's ``time_total_s`` at its last report) minus the time
   its epochs spent training and validating (sum of ``epoch_time_s``), for 1-worker (direct) and
   2-worker (Ray Train DDP) trials.
2. ASHA + TPE vs random search without early stopping, on one small fixed problem (patch training, every
   epoch = the same number of optimizer steps, so epochs count compute): random search's best val_psnr B
   after N trials x E epochs; then how many epochs (summed over all trials, in the order results arrived)
   ASHA + TPE needed before any trial reached B, and how many seconds of search wall time against random
   search's whole wall time. Goal: <= 1/3 of random's compute, in >= 3 of 4 seeds, by both measures.

    python experiments/benchmarks/bench_search.py [--trials 12] [--epochs 4] [--count 384] [--seeds 0 1 2 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import yaml
from ray import tune

from lensearch.data.simulate import simulate_to_h5
from lensearch.search.schema import load_search
from lensearch.search.tuner import SearchOptions, run_search
from lensearch.training.cluster import connect

SPACE = {
    "model": {"choice": {
        "espcn": {"num_features": {"categorical": [8, 16]}, "num_layers": {"int": [3, 6]}},
        "span": {"num_features": {"categorical": [8, 16]}, "num_blocks": {"int": [1, 2]}},
        "rdn": {"num_features": {"categorical": [8, 16]}, "num_blocks": {"int": [1, 2]}, "num_layers": 2,
                "growth": 8},
    }},
    "normalization": {"choice": {"none": {}, "minmax": {}, "asinh": {"softening": {"logfloat": [0.01, 1.0]}}}},
    "optimizer": {"choice": {"adam": {"lr": {"logfloat": [1e-5, 1e-2]}}}},
    "scheduler": {"choice": {"cosine": {}}},
    "train": {"batch_size": 16, "patch_size": 32, "steps_per_epoch": 60},
}


class Recorder(tune.Callback):
    def __init__(self):
        self.results: list[dict] = []
        self.start = time.time()

    def setup(self, **info):
        self.start = time.time()

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.results.append({"trial": trial.trial_id, "timestamp": result["timestamp"], "epoch": result["epoch"],
                             "wall": time.time() - self.start,
                             "val_psnr": result["val_psnr"], "time_total_s": result["time_total_s"],
                             "epoch_time_s": result["epoch_time_s"]})


def _search(tmp: Path, data: Path, name: str, trials: int, epochs: int, early_stopping: dict, searcher: dict,
            workers: int = 1) -> list[dict]:
    doc = {"name": name, "data": {"path": str(data)}, "objective": {"metric": "val_psnr", "mode": "max"},
           "budget": {"num_samples": trials, "max_epochs": epochs}, "early_stopping": early_stopping, "searcher": searcher,
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


def epochs_to_reach(results: list[dict], target: float) -> tuple[int, float] | None:
    """Epochs (summed over trials, in arrival order) and search wall seconds until a result reached ``target``."""
    spent = 0
    for r in sorted(results, key=lambda r: r["wall"]):
        spent += 1
        if r["val_psnr"] >= target:
            return spent, r["wall"]
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=12)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--count", type=int, default=384)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3], help="searcher seeds for part [2]")
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
            ratios, wall_ratios = [], []
            for seed in args.seeds:
                rnd = _search(tmp, data, f"random{seed}", args.trials, args.epochs, {"name": "none"},
                              {"name": "random", "seed": seed})
                best = max(r["val_psnr"] for r in rnd)
                budget, rnd_wall = args.trials * args.epochs, max(r["wall"] for r in rnd)
                asha = _search(tmp, data, f"asha_tpe{seed}", args.trials * 2, args.epochs,
                               {"name": "asha", "grace_period": 1, "reduction_factor": 3},
                               {"name": "tpe", "seed": seed, "startup_trials": max(2, args.trials // 4)})
                reached = epochs_to_reach(asha, best)
                ratios.append(reached[0] / budget if reached else float("inf"))
                wall_ratios.append(reached[1] / rnd_wall if reached else float("inf"))
                shown = (f"reached it after {reached[0]} epochs / {reached[1]:.0f} s: ratios {ratios[-1]:.2f} "
                         f"(epochs) {wall_ratios[-1]:.2f} (wall)" if reached else "never reached it")
                print(f"[2] seed {seed}: random search best val_psnr {best:.3f} after {len(rnd)} epochs / "
                      f"{rnd_wall:.0f} s ({args.trials} trials x {args.epochs}) | ASHA+TPE {shown} (goal <= 0.33);"
                      f" ASHA+TPE best {max(r['val_psnr'] for r in asha):.3f} in {len(asha)} epochs", flush=True)
            met = sum(1 for a, b in zip(ratios, wall_ratios) if a <= 1 / 3 and b <= 1 / 3)
            print(f"[2] seeds {args.seeds}: epoch ratios {', '.join(f'{r:.2f}' for r in ratios)}; wall ratios "
                  f"{', '.join(f'{r:.2f}' for r in wall_ratios)}; goal (<= 0.33 by both) met in {met} of "
                  f"{len(ratios)} seeds")
    finally:
        handle.close()


if __name__ == "__main__":
    main()
