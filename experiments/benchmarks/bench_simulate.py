"""Simulator throughput (1 vs 2 worker processes) and the bicubic baseline's quality on the presets.

    python experiments/benchmarks/bench_simulate.py [--presets tiny model_i] [--counts 1200 200]
        [--workers 1 2] [--repeats 3] [--quality 150]

Throughput: for each preset and worker count, one small warm-up run (worker start, imports, caches),
then ``--repeats`` timed runs of ``simulate_arrays`` (best one kept: the machine may be shared); prints
images/s, images/s per worker, the speed-up over the first worker count and, for one worker, images per
CPU-second (robust to other load); then the speed-up the machine gives a pure-Python loop in as many
processes, the ceiling for the simulator's (the machine may be shared). Quality: ``--quality`` images
per preset (seed 1), bicubic-upsampled LR scored against HR (and against the noise-free HR) with
``lensearch.metrics.evaluate`` (min-max scaled to the reference, data_range 1), plus the HR noise itself.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch

from lensearch.data.simulate import simulate_arrays
from lensearch.metrics import evaluate
from lensearch.models.common import bicubic


def images_per_s(preset: str, count: int, workers: int, repeats: int) -> tuple[float, float]:
    """Best wall-clock images/s over ``repeats`` runs, and images per CPU-second of this process (the
    rate of one core whatever else runs on the machine; only meaningful for one worker)."""
    simulate_arrays(preset, 2 * workers, 99, workers=workers)  # warm-up
    best, cpu = float("inf"), float("inf")
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        simulate_arrays(preset, count, 0, workers=workers)
        best, cpu = min(best, time.perf_counter() - t0), min(cpu, time.process_time() - c0)
    return count / best, count / cpu


def _burn(n: int) -> int:
    return sum(i * i for i in range(n))


def machine_speedup(workers: int, n: int = 5_000_000) -> float:
    """Speed-up of ``workers`` processes each burning the same pure-Python loop over one process doing it:
    what the machine gives right now (other load, shared vCPUs), the ceiling for the simulator's ratio."""
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(_burn, [1000] * workers))  # start the processes
        t0 = time.perf_counter()
        _burn(n)
        one = time.perf_counter() - t0
        t0 = time.perf_counter()
        list(pool.map(_burn, [n] * workers))
        return workers * one / (time.perf_counter() - t0)


def quality(preset: str, count: int) -> dict[str, float]:
    d = simulate_arrays(preset, count, 1)
    hr, lr, clean = (torch.from_numpy(d[k]).double() for k in ("hr", "lr", "hr_clean"))
    up = bicubic(lr, hr.shape[-1] // lr.shape[-1])
    vs_hr, vs_clean, noise = evaluate(up, hr), evaluate(up, clean), evaluate(hr, clean)
    return {"psnr": vs_hr["psnr"].mean().item(), "psnr_p5": vs_hr["psnr"].quantile(0.05).item(),
            "psnr_p95": vs_hr["psnr"].quantile(0.95).item(), "ssim": vs_hr["ssim"].mean().item(),
            "psnr_clean": vs_clean["psnr"].mean().item(), "ssim_clean": vs_clean["ssim"].mean().item(),
            "hr_noise_psnr": noise["psnr"].mean().item()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=["tiny", "model_i"])
    ap.add_argument("--counts", nargs="+", type=int, default=[1200, 200], help="images per timed run, per preset")
    ap.add_argument("--workers", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quality", type=int, default=150, help="images per preset for the PSNR table (0: skip)")
    args = ap.parse_args()
    if len(args.counts) != len(args.presets):
        ap.error("give one --counts value per preset")
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f}, torch threads {torch.get_num_threads()}")

    print("\n| preset | workers | images | images/s | images/s per worker | speed-up | images per CPU-s |"
          "\n|---|---|---|---|---|---|---|")
    for preset, count in zip(args.presets, args.counts):
        base = None
        for w in args.workers:
            rate, per_cpu_s = images_per_s(preset, count, w, args.repeats)
            base = base or rate
            cpu = f"{per_cpu_s:.1f}" if w == 1 else "-"
            print(f"| {preset} | {w} | {count} | {rate:.1f} | {rate / w:.1f} | {rate / base:.2f}x | {cpu} |",
                  flush=True)
    print(f"\n# load average after: {os.getloadavg()[0]:.1f}; pure-Python loop speed-up now: "
          + ", ".join(f"{w} processes {machine_speedup(w):.2f}x" for w in args.workers if w > 1))

    if args.quality:
        print("\n| preset | bicubic PSNR vs hr (p5-p95) | SSIM | PSNR vs hr_clean | SSIM | hr vs hr_clean PSNR |"
              "\n|---|---|---|---|---|---|")
        for preset in args.presets:
            q = quality(preset, args.quality)
            print(f"| {preset} | {q['psnr']:.2f} ({q['psnr_p5']:.1f}-{q['psnr_p95']:.1f}) | {q['ssim']:.3f} | "
                  f"{q['psnr_clean']:.2f} | {q['ssim_clean']:.3f} | {q['hr_noise_psnr']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
