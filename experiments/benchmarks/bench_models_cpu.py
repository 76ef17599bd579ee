"""CPU cost of the small architectures, one thread: forward+backward time per training batch.

For each model: parameters, forward GFLOPs per batch (lensearch.models.cost), and the median / min wall
time of forward + L1 loss + backward on a batch of 16 LR patches 24x24 at scale 2 (single channel; no
optimizer step), plus the no-grad forward time of the same batch. ``torch.set_num_threads(1)``. The models
are timed round-robin (one run of each per round), so load from other processes on a shared machine falls
on all of them alike and the ratios stay meaningful even when the absolute times drift.

    python experiments/benchmarks/bench_models_cpu.py [--repeats 10] [--warmup 3] [--batch 16] [--size 24]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from lensearch.models import cost, registry

MODELS = {
    "espcn": {},
    "span": {},
    "rdn": {"num_features": 32, "num_blocks": 4},
    "srresnet": {},
}


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=24)
    parser.add_argument("--scale", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    lr = torch.rand(args.batch, 1, args.size, args.size, generator=gen)
    hr = torch.rand(args.batch, 1, args.size * args.scale, args.size * args.scale, generator=gen)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, batch {args.batch} x 1 x "
          f"{args.size} x {args.size}, scale {args.scale}, {args.repeats} timed runs after {args.warmup} "
          f"warm-up; load average before {os.getloadavg()[0]:.2f}")
    print("| model | hyperparameters | params | fwd GFLOPs/batch | fwd+bwd ms/batch (median) | min | "
          "x espcn | fwd-only ms (median) | train images/s |")
    print("|---|---|---|---|---|---|---|---|---|")
    runs = {}
    for name, params in MODELS.items():
        torch.manual_seed(0)
        model = registry.build(name, scale=args.scale, **params).train()

        def step(model=model):
            model.zero_grad(set_to_none=True)
            (model(lr) - hr).abs().mean().backward()

        def forward(model=model):
            with torch.no_grad():
                model(lr)

        runs[name] = (model, step, forward, [], [])
    for i in range(args.warmup + args.repeats):  # round-robin
        for model, step, forward, train, infer in runs.values():
            t, f = timed(step), timed(forward)
            if i >= args.warmup:
                train.append(t)
                infer.append(f)
    base = statistics.median(runs["espcn"][3])
    for name, (model, _, _, train, infer) in runs.items():
        flops = cost.estimate_flops(model, tuple(lr.shape))
        resolved = registry.resolve_params(name, MODELS[name])
        shown = ", ".join(f"{k}={v}" for k, v in resolved.items() if k != "bicubic_skip")
        med = statistics.median(train)
        print(f"| {name} | {shown} | {cost.count_params(model):,} | {flops / 1e9:.2f} | {med:.1f} | "
              f"{min(train):.1f} | {med / base:.1f} | {statistics.median(infer):.1f} | {args.batch / med * 1e3:.0f} |")
    print(f"load average after {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
