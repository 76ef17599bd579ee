"""Training-loop benchmarks, measured side by side in one run (ratios, not absolute goals).

1. Step throughput of lensearch's loop (``training.loop.fit``, single process, no Ray) vs a plain PyTorch
   loop on the same model, batch size and in-memory data (goal: ratio >= 0.9).
2. Fixed start cost until the first step, through the real path (Ray Tune trial -> direct single worker,
   or Ray Train TorchTrainer with 2 gloo workers): the first report's ``time_total_s`` minus its
   ``epoch_time_s``.
3. 2-worker DDP vs 1-worker throughput (images/s over the training part of an epoch).

    python experiments/benchmarks/bench_training.py [--count 512] [--epochs 3]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

from lensearch.data.simulate import simulate_to_h5
from lensearch.data.store import SRDataset, train_stats
from lensearch.models import registry
from lensearch.training.config import resolve_run_config
from lensearch.training.context import RunContext
from lensearch.training.loop import fit
from lensearch.training.runinfo import RunInfo

MODEL = {"name": "rdn", "num_features": 16, "num_blocks": 2, "num_layers": 3, "growth": 16}


def plain_loop(path: Path, epochs: int, batch: int) -> float:
    """The simplest correct PyTorch loop: in-memory tensors, Adam, L1. Returns train images/s."""
    data = SRDataset(path, split="train", in_memory=True)
    lr = torch.stack([data[i]["lr"] for i in range(len(data))])
    hr = torch.stack([data[i]["hr"] for i in range(len(data))])
    torch.manual_seed(0)
    model = registry.build(MODEL["name"], scale=2, **{k: v for k, v in MODEL.items() if k != "name"})
    opt = torch.optim.Adam(model.parameters(), lr=2e-4)
    seen, t = 0, 0.0
    for _ in range(epochs):
        perm = torch.randperm(len(lr))
        t0 = time.perf_counter()
        for i in range(0, len(lr) - batch + 1, batch):
            idx = perm[i:i + batch]
            loss = torch.nn.functional.l1_loss(model(lr[idx]), hr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            seen += len(idx)
        t += time.perf_counter() - t0
    return seen / t


def lensearch_loop(path: Path, epochs: int, batch: int, workdir: Path) -> float:
    config = resolve_run_config({"model": MODEL, "normalization": "none", "augment": {"flips": False, "rot90": False},
                                 "train": {"epochs": epochs, "batch_size": batch}})
    reports: list[dict] = []
    run = RunInfo(data_path=str(path), dir=str(workdir / "loop"), scale=2, has_clean=True, stats=train_stats(path))
    fit(config, run, RunContext(torch.device("cpu"), report_fn=reports.append))
    return sum(r["images_per_s"] for r in reports) / len(reports)


def ray_runs(path: Path, epochs: int, batch: int, workdir: Path) -> dict[int, dict[str, float]]:
    from ray import tune

    from lensearch.search.tuner import SearchOptions, train_one
    from lensearch.training.cluster import connect

    class FirstResult(tune.Callback):
        def __init__(self):
            self.first = None
            self.rates = []

        def on_trial_result(self, iteration, trials, trial, result, **info):
            if self.first is None:
                self.first = result["time_total_s"] - result["epoch_time_s"]
            self.rates.append(result["images_per_s"])

    out = {}
    handle = connect(num_cpus=os.cpu_count())
    try:
        for workers in (1, 2):
            config = resolve_run_config({"data": {"path": str(path)}, "model": MODEL, "normalization": "none",
                                         "augment": {"flips": False, "rot90": False},
                                         "train": {"epochs": epochs, "batch_size": batch}})
            # train_one gives 1 worker all cores as threads; 2 workers get one core each
            probe = FirstResult()
            train_one(config, f"bench{workers}", SearchOptions(store=workdir / f"mlruns{workers}", root=workdir,
                                                                quiet=True, workers=workers, callbacks=[probe]))
            out[workers] = {"start_s": probe.first, "images_per_s": sum(probe.rates[1:]) / max(1, len(probe.rates) - 1)}
    finally:
        handle.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=512)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch", type=int, default=16)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        path = tmp / "tiny.h5"
        simulate_to_h5(path, "tiny", args.count, 0, workers=1, progress=False)
        threads = torch.get_num_threads()
        print(f"data: {args.count} tiny images (32->64 px), batch {args.batch}, model {MODEL}, "
              f"torch threads {threads}")
        plain = plain_loop(path, args.epochs, args.batch)
        ours = lensearch_loop(path, args.epochs, args.batch, tmp)
        print(f"[1] plain loop {plain:8.1f} img/s | lensearch loop {ours:8.1f} img/s | ratio {ours / plain:.2f} "
              f"(goal >= 0.9)")
        ray = ray_runs(path, args.epochs, args.batch, tmp)
        print(f"[2] start cost until first step: 1 worker (direct) {ray[1]['start_s']:.1f} s | "
              f"2 workers (TorchTrainer, gloo) {ray[2]['start_s']:.1f} s")
        print(f"[3] throughput: 1 worker {ray[1]['images_per_s']:.1f} img/s | 2 workers "
              f"{ray[2]['images_per_s']:.1f} img/s | ratio 2w/1w {ray[2]['images_per_s'] / ray[1]['images_per_s']:.2f}")


if __name__ == "__main__":
    main()
