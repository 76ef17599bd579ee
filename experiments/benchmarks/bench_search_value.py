"""Does the search earn its compute? Search vs its default configuration vs the plain recipe, at equal wall
time, on a Model-I-like simulated set, scored on the kept-back test split. One run, side by side.

1. search: ``lensearch tune search_spaces/cnn.yaml --profile cpu --data DATA --time-budget T`` (a subprocess,
   as a user runs it); its best checkpoint scored on the test split.
2. default configuration: the profile's first ``initial_points`` entry (the search's known-good default),
   trained alone with the whole machine (2 threads) for the same T: its epoch count is set from a timed
   first epoch so its schedule fits T.
3. plain recipe: ``plain_recipe.py`` (what a user who skips the search writes) for T seconds, 2 threads.
4. bicubic and the noise ceiling on the same test images.

    python experiments/benchmarks/bench_search_value.py --seconds 1200 [--data FILE.h5 | --count 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))

from plain_recipe import match_ray_priority, train_plain  # noqa: E402

from lensearch.data.store import train_stats  # noqa: E402
from lensearch.export import RawImageSR, load_network, score_split  # noqa: E402
from lensearch.data.transforms import build_normalization  # noqa: E402
from lensearch.training.checkpoint import load_checkpoint  # noqa: E402


def _score_checkpoint(path: Path, data: Path) -> dict:
    ckpt = load_checkpoint(path)
    model = RawImageSR(load_network(ckpt), build_normalization(ckpt["normalization"]))
    return score_split(model, data, "test")


def run_search(data: Path, seconds: float, store: Path, space: str) -> tuple[dict, float, dict]:
    t0 = time.time()
    out = subprocess.run([sys.executable, "-m", "lensearch", "tune", str(REPO / "search_spaces" / f"{space}.yaml"),
                          "--profile", "cpu", "--data", str(data), "--time-budget", str(seconds),
                          "--store", str(store), "--json", "--quiet"],
                         capture_output=True, text=True, cwd=store.parent)
    wall = time.time() - t0
    if out.returncode != 0:
        raise SystemExit(f"search failed ({out.returncode}): {out.stderr[-2000:]}")
    outcome = json.loads(out.stdout.strip().splitlines()[-1])
    best = outcome["summary"]["best_checkpoint"]
    return _score_checkpoint(Path(best), data), wall, outcome["summary"]


def run_default(data: Path, seconds: float, workdir: Path, space: str) -> tuple[dict, float, int]:
    from lensearch.search.schema import load_search
    from lensearch.training.config import resolve_run_config
    from lensearch.training.context import RunContext
    from lensearch.training.loop import fit
    from lensearch.training.runner import prepare_data

    search = load_search(REPO / "search_spaces" / f"{space}.yaml").with_profile("cpu")
    config = search.space.materialize(dict(search.searcher["initial_points"][0]))
    config["data"] = {"path": str(data)}
    run = prepare_data({"path": str(data), "preset": None}, workdir, progress=False)
    torch.set_num_threads(2)
    t0 = time.time()
    probe = resolve_run_config({**config, "train": {**config["train"], "epochs": 1}})
    fit(probe, run.replace(dir=str(workdir / "probe")), RunContext(torch.device("cpu")))
    per_epoch = time.time() - t0
    epochs = max(1, int((seconds - per_epoch) / per_epoch))  # the probe's time counts against the budget
    # the time limit keeps the leg at equal wall time when the probe epoch was faster than the later ones
    # (a busier machine): the run then stops at its first report past T
    full = resolve_run_config({**config, "train": {**config["train"], "epochs": epochs,
                                                   "time_limit_s": max(1.0, seconds - per_epoch)}})
    fit(full, run.replace(dir=str(workdir / "default")), RunContext(torch.device("cpu")))
    wall = time.time() - t0
    return _score_checkpoint(workdir / "default" / "checkpoints" / "best.pt", data), wall, epochs


def gap(psnr: float, bicubic: float, ceiling: float) -> float:
    return (psnr - bicubic) / (ceiling - bicubic)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=1200)
    ap.add_argument("--data", type=Path, help="an HDF5 file with train/val/test splits (default: simulate)")
    ap.add_argument("--count", type=int, default=1000, help="images to simulate (model_i preset, seed 1)")
    ap.add_argument("--space", default="cnn")
    ap.add_argument("--skip", nargs="*", default=[], choices=["search", "default", "plain"])
    args = ap.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = args.data
        if data is None:
            from lensearch.data.simulate import simulate_to_h5

            data = tmp / "model_i.h5"
            t0 = time.time()
            simulate_to_h5(data, "model_i", args.count, 1, workers=2, progress=False)
            print(f"simulated {args.count} model_i images (seed 1) in {time.time() - t0:.0f} s", flush=True)
        train_stats(data)
        rows = []
        if "search" not in args.skip:
            score, wall, summary = run_search(data, args.seconds, tmp / "mlruns", args.space)
            rows.append((f"search ({args.space}.yaml, cpu profile, {summary['trials']} trials)", score, wall))
            print(f"search done: {summary['trials']} trials, {summary['completed']} completed, best val_psnr "
                  f"{summary.get('best_val_psnr', float('nan')):.3f}", flush=True)
        match_ray_priority()  # the default and plain legs run at the priority of the search's trials
        if "default" not in args.skip:
            score, wall, epochs = run_default(data, args.seconds, tmp, args.space)
            rows.append((f"default configuration ({epochs} epochs)", score, wall))
        if "plain" not in args.skip:
            torch.set_num_threads(2)
            t0 = time.time()
            plain = train_plain(str(data), args.seconds, eval_split="test")
            wall = time.time() - t0
            rows.append((f"plain recipe ({plain['steps']} steps)",
                         {"model": {"psnr": plain["test_psnr"], "ssim": plain["test_ssim"]}}, wall))
        from lensearch.evaluation import baseline_metrics

        base = baseline_metrics(data, split="test", methods=("bicubic",))
        bic, ceil = base["methods"]["bicubic"], base["noise_ceiling"]
        print(f"\ntest split: {base['n']} images; equal wall time {args.seconds:.0f} s each (2 CPU cores)")
        print(f"{'method':<50}{'test PSNR':>10}{'SSIM':>8}{'gap closed':>12}{'wall s':>8}")
        for name, score, wall in rows:
            m = score["model"]
            print(f"{name:<50}{m['psnr']:>10.3f}{m['ssim']:>8.4f}"
                  f"{100 * gap(m['psnr'], bic['psnr'], ceil['psnr']):>11.1f}%{wall:>8.0f}")
        print(f"{'bicubic':<50}{bic['psnr']:>10.3f}{bic['ssim']:>8.4f}{0.0:>11.1f}%")
        print(f"{'noise ceiling (hr_clean vs hr)':<50}{ceil['psnr']:>10.3f}{ceil['ssim']:>8.4f}{100.0:>11.1f}%")


if __name__ == "__main__":
    main()
