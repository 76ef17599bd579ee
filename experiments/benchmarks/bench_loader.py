"""HDF5 loader throughput: SRDataset reading the file vs the same split held in RAM.

    python experiments/benchmarks/bench_loader.py [--n 2000] [--hr 64] [--batch-size 16] [--workers 0 2]

Writes a random store file (HR 64 px / LR 32 px by default) with the store writer into a temporary folder,
then times full shuffled passes of a DataLoader over ``SRDataset(path)`` and ``SRDataset(path,
in_memory=True)`` for each worker count (one warm-up pass, persistent workers), and prints images/s side by
side with the ratio.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from lensearch.data.store import SRDataset, write_h5


def images_per_s(ds: SRDataset, batch_size: int, workers: int, epochs: int) -> float:
    loader = DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=workers,
                        persistent_workers=workers > 0)
    for _ in loader:  # warm-up: worker start, file open, page cache
        pass
    t0 = time.perf_counter()
    n = 0
    for _ in range(epochs):
        for batch in loader:
            n += batch["hr"].shape[0]
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--hr", type=int, default=64, help="HR side in px (LR is half)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    ap.add_argument("--epochs", type=int, default=3, help="timed passes per configuration")
    args = ap.parse_args()
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    hr = rng.random((args.n, 1, args.hr, args.hr), dtype=np.float32)
    lr = hr.reshape(args.n, 1, args.hr // 2, 2, args.hr // 2, 2).mean(axis=(3, 5))
    with tempfile.TemporaryDirectory() as tmp:
        path = write_h5(Path(tmp) / "bench.h5", hr=hr, lr=lr, split_fractions=(1.0, 0.0, 0.0))
        print(f"{args.n} images, HR {args.hr} px / LR {args.hr // 2} px, batch {args.batch_size}, "
              f"{args.epochs} timed passes; torch {torch.__version__}, {platform.processor() or platform.machine()}, "
              f"{torch.get_num_threads()} threads")
        print(f"{'workers':>7} {'hdf5 img/s':>12} {'in-memory img/s':>16} {'hdf5/mem':>9}")
        for w in args.workers:
            disk = images_per_s(SRDataset(path, "train"), args.batch_size, w, args.epochs)
            mem = images_per_s(SRDataset(path, "train", in_memory=True), args.batch_size, w, args.epochs)
            print(f"{w:>7} {disk:>12.0f} {mem:>16.0f} {disk / mem:>9.2f}")


if __name__ == "__main__":
    main()
