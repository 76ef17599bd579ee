"""Search benchmarks, measured side by side in one run.

1. Per-trial overhead of single-worker trials: each trial's wall time on the driver (Tune starting it, until it
   ended) minus the time its reports spent training and validating (sum of ``epoch_time_s``), and what the
   search's wall time holds beyond its trials' training ((search wall x concurrent trials - summed epoch time)
   / trials: the time a trial slot sits idle between trials). ``--ddp`` adds 2-worker (Ray Train DDP) trials.
2. ASHA + TPE vs random search, in the regime of the ASHA paper (Li et al. 2020): random search trains each of
   ``--random-trials`` N configurations to the full budget R (``--reports`` reports of ``--steps`` optimizer
   steps on random patches, cosine over all of R); ASHA (grace ``--grace`` reports = the minimum resource r,
   reduction factor 3) + TPE samples configurations until it has spent the same total budget (N x R steps).
   Every report scores the same whole validation images (a fixed split, ``--val-images`` of them), so a
   report's PSNR is no sampling noise. Random search's best val_psnr B; then how many optimizer steps (summed
   over all trials, in the order results arrived) ASHA + TPE spent before any trial reached B, against random
   search's N x R, and how many seconds of search wall time against random search's whole wall time (both from
   the search's start, Ray already up). Goal: <= 1/3 by both measures, in >= 3 of 4 seeds.
   ASHA + TPE stops once it reached B (``--full-budget``: it runs to the equal budget, to report its best too).

    python experiments/benchmarks/bench_search.py                  # seeds 0 1 2 3: 9-13 min on 2 cores
    python experiments/benchmarks/bench_search.py --quick          # seed 0 only, no part [1]: ~2.5 min

A seed costs random search's ~90 s plus ASHA + TPE's time to reach its best (all of ~90 s when it does not).
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
    "train": {"batch_size": 16, "patch_size": 32, "steps_per_epoch": 40},
}


class Recorder(tune.Callback):
    """Every result (with the search wall time it arrived at) and each trial's start and end on the driver."""

    def __init__(self):
        self.results: list[dict] = []
        self.started: dict[str, float] = {}
        self.ended: dict[str, float] = {}
        self.start = time.time()

    def setup(self, **info):
        self.start = time.time()

    def on_trial_start(self, iteration, trials, trial, **info):
        self.started[trial.trial_id] = time.time() - self.start

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.ended[trial.trial_id] = time.time() - self.start

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.results.append({"trial": trial.trial_id, "epoch": result["epoch"], "steps": result["steps"],
                             "wall": time.time() - self.start, "val_psnr": result["val_psnr"],
                             "epoch_time_s": result["epoch_time_s"], "pid": result.get("pid")})


class Budget(tune.Stopper):
    """Ends the search once its trials have taken ``steps`` optimizer steps in all, or (with ``target``) once a
    result reached ``target`` val_psnr."""

    def __init__(self, steps: int, target: float | None = None):
        self.steps, self.target = steps, target
        self.spent, self.seen, self.hit = 0, {}, False

    def __call__(self, trial_id, result):
        self.spent += result["steps"] - self.seen.get(trial_id, 0)
        self.seen[trial_id] = result["steps"]
        self.hit = self.hit or (self.target is not None and result["val_psnr"] >= self.target)
        return False

    def stop_all(self):
        return self.hit or self.spent >= self.steps


def _search(tmp: Path, data: Path, name: str, space: dict, trials: int, reports: int, early_stopping: dict,
            searcher: dict, workers: int = 1, stop=None) -> Recorder:
    doc = {"name": name, "data": {"path": str(data)}, "objective": {"metric": "val_psnr", "mode": "max"},
           "budget": {"num_samples": trials, "max_epochs": reports}, "early_stopping": early_stopping,
           "searcher": searcher, "resources": {"workers": workers}, "space": space}
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    rec = Recorder()
    run_search(load_search(path), SearchOptions(store=tmp / "mlruns", root=tmp, quiet=True, callbacks=[rec],
                                                stop=stop))
    return rec


def overhead(rec: Recorder, concurrency: int) -> tuple[float, float, int]:
    """(mean per-trial overhead on the driver, idle seconds per trial slot per trial, trial processes used)."""
    epoch_s: dict[str, float] = {}
    for r in rec.results:
        epoch_s[r["trial"]] = epoch_s.get(r["trial"], 0.0) + r["epoch_time_s"]
    per_trial = [rec.ended[t] - rec.started[t] - epoch_s[t] for t in epoch_s if t in rec.ended]
    span = max(rec.ended.values()) - min(rec.started.values())
    idle = (span * concurrency - sum(epoch_s.values())) / len(epoch_s)
    return sum(per_trial) / len(per_trial), idle, len({r["pid"] for r in rec.results})


def reach(results: list[dict], target: float) -> tuple[int, float] | None:
    """Optimizer steps (summed over trials, in arrival order) and search wall seconds until a result reached
    ``target``."""
    spent, seen = 0, {}
    for r in sorted(results, key=lambda r: r["wall"]):
        spent += r["steps"] - seen.get(r["trial"], 0)
        seen[r["trial"]] = r["steps"]
        if r["val_psnr"] >= target:
            return spent, r["wall"]
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--random-trials", type=int, default=9, help="N: random search's configurations")
    ap.add_argument("--reports", type=int, default=27, help="R in reports: every trial's full budget")
    ap.add_argument("--steps", type=int, default=40, help="optimizer steps per report")
    ap.add_argument("--grace", type=int, default=1, help="ASHA's minimum resource r, in reports")
    ap.add_argument("--startup", type=int, default=6, help="TPE's random start-up trials")
    ap.add_argument("--count", type=int, default=384, help="simulated 'tiny' images")
    ap.add_argument("--val-images", type=int, default=64, help="validation images every report scores")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3], help="searcher seeds for part [2]")
    ap.add_argument("--full-budget", action="store_true", help="ASHA + TPE spends the whole equal budget")
    ap.add_argument("--skip-overhead", action="store_true", help="only part [2]")
    ap.add_argument("--ddp", action="store_true", help="part [1] with 2-worker (Ray Train DDP) trials too")
    ap.add_argument("--quick", action="store_true", help="seed 0 only, no part [1] (a smoke run)")
    args = ap.parse_args()
    if args.quick:
        args.seeds, args.skip_overhead = args.seeds[:1], True
    space = {**SPACE, "train": {**SPACE["train"], "steps_per_epoch": args.steps}}
    handle = connect()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            data = tmp / "tiny.h5"
            val_share = args.val_images / args.count
            simulate_to_h5(data, "tiny", args.count, 0, workers=1, progress=False,
                           split_fractions=(1 - val_share - 0.02, val_share, 0.02))
            concurrency = int(handle.resources().get("CPU", 1))
            if not args.skip_overhead:
                rec = _search(tmp, data, "overhead1", space, 6, 2, {"name": "none"}, {"name": "random", "seed": 0})
                per, idle, pids = overhead(rec, concurrency)
                line = (f"[1] per-trial overhead, 1 worker (direct): {per:.2f} s on the driver (start -> end - "
                        f"epoch time); {idle:.2f} s of idle trial slot per trial; {pids} trial processes for 6 trials")
                if args.ddp:
                    rec = _search(tmp, data, "overhead2", space, 2, 2, {"name": "none"},
                                  {"name": "random", "seed": 0}, workers=2)
                    line += f" | 2 workers (Ray Train DDP): {overhead(rec, 1)[0]:.2f} s"
                print(line, flush=True)
            n, big_r, u = args.random_trials, args.reports, args.steps
            budget = n * big_r * u
            print(f"[2] random search: {n} trials x {big_r} reports x {u} steps = {budget} steps; ASHA (grace "
                  f"{args.grace}, rf 3, R/r = {big_r / args.grace:g}) + TPE ({args.startup} start-up): up to the "
                  f"same {budget} steps; {args.val_images} validation images", flush=True)
            ratios, wall_ratios = [], []
            for seed in args.seeds:
                rnd = _search(tmp, data, f"random{seed}", space, n, big_r, {"name": "none"},
                              {"name": "random", "seed": seed})
                best = max(r["val_psnr"] for r in rnd.results)
                rnd_wall = max(r["wall"] for r in rnd.results)
                stop = Budget(budget, None if args.full_budget else best)
                asha = _search(tmp, data, f"asha_tpe{seed}", space, n * big_r // args.grace + n,  # the stopper ends it
                               big_r, {"name": "asha", "grace_period": args.grace, "reduction_factor": 3},
                               {"name": "tpe", "seed": seed, "startup_trials": args.startup}, stop=stop)
                reached = reach(asha.results, best)
                ratios.append(reached[0] / budget if reached else float("inf"))
                wall_ratios.append(reached[1] / rnd_wall if reached else float("inf"))
                shown = (f"reached it after {reached[0]} steps / {reached[1]:.0f} s: ratios {ratios[-1]:.2f} "
                         f"(steps) {wall_ratios[-1]:.2f} (wall)" if reached else "never reached it")
                spent = sum(r["steps"] - p for r, p in zip(asha.results, _previous_steps(asha.results)))
                print(f"[2] seed {seed}: random search best val_psnr {best:.3f} ({budget} steps, {rnd_wall:.0f} s) | "
                      f"ASHA+TPE {shown} (goal <= 0.33); ASHA+TPE best {max(r['val_psnr'] for r in asha.results):.3f}"
                      f" in {spent} steps, {len(asha.started)} trials", flush=True)
            met = sum(1 for a, b in zip(ratios, wall_ratios) if a <= 1 / 3 and b <= 1 / 3)
            print(f"[2] seeds {args.seeds}: step ratios {', '.join(f'{r:.2f}' for r in ratios)}; wall ratios "
                  f"{', '.join(f'{r:.2f}' for r in wall_ratios)}; goal (<= 0.33 by both) met in {met} of "
                  f"{len(ratios)} seeds")
    finally:
        handle.close()


def _previous_steps(results: list[dict]) -> list[int]:
    """For each result, the steps its trial had reported before it."""
    seen, out = {}, []
    for r in results:
        out.append(seen.get(r["trial"], 0))
        seen[r["trial"]] = r["steps"]
    return out


if __name__ == "__main__":
    main()
