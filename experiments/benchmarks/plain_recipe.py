"""The plain PyTorch recipe a user who skips the search would write: the yardstick a search must beat.

Six 3x3 convs at LR resolution, pixel shuffle, a bicubic skip and a zero-initialised last layer; random
aligned patches, D4 flips, Adam with a cosine schedule, L1 loss; trains for a fixed number of seconds, then
scores whole images of a split with lensearch's metric convention (the only lensearch code it uses, so the
numbers are comparable with a search's leaderboard). Deliberately independent of lensearch's training code.

    python experiments/benchmarks/plain_recipe.py data/tiny_256_seed0.h5 --seconds 120 [--features 32]
"""

from __future__ import annotations

import argparse
import json
import math
import time

import h5py
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lensearch.metrics import MetricSums


class Plain(nn.Module):
    def __init__(self, scale: int, features: int = 32, layers: int = 6):
        super().__init__()
        body = [nn.Conv2d(1, features, 3, padding=1), nn.ReLU()]
        for _ in range(layers - 2):
            body += [nn.Conv2d(features, features, 3, padding=1), nn.ReLU()]
        body += [nn.Conv2d(features, scale * scale, 3, padding=1), nn.PixelShuffle(scale)]
        self.body, self.scale = nn.Sequential(*body), scale
        nn.init.zeros_(body[-2].weight)
        nn.init.zeros_(body[-2].bias)

    def forward(self, x):
        return self.body(x) + F.interpolate(x, scale_factor=self.scale, mode="bicubic", align_corners=False)


RAY_WORKER_NICENESS = 15  # Ray starts trial processes at this niceness (its `worker_niceness` default)


def match_ray_priority() -> None:
    """Lower this process to the priority of a Ray trial, so that a leg run here and a search's trials are slowed
    alike by whatever else shares the machine (a benchmark's side-by-side legs must compete on equal terms)."""
    import os

    os.nice(max(0, RAY_WORKER_NICENESS - os.nice(0)))


def load(path: str, split: str):
    with h5py.File(path, "r") as f:
        rows = f[f"split/{split}"][()]
        return (torch.from_numpy(f["lr"][np.sort(rows)].astype(np.float32)),
                torch.from_numpy(f["hr"][np.sort(rows)].astype(np.float32)), int(f.attrs["scale"]))


def train_plain(path: str, seconds: float, *, features: int = 32, patch: int = 48, batch: int = 32,
                lr: float = 1e-3, seed: int = 0, eval_split: str = "val") -> dict:
    """Train the plain recipe for ``seconds`` of wall time; returns val/test metrics and the step count."""
    torch.manual_seed(seed)
    lr_img, hr_img, s = load(path, "train")
    model = Plain(s, features)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    p = min(patch // s, lr_img.shape[-1])
    est_steps = None
    steps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        idx = torch.randint(len(lr_img), (batch,))
        y, x = torch.randint(lr_img.shape[-2] - p + 1, ()), torch.randint(lr_img.shape[-1] - p + 1, ())
        lo = lr_img[idx, :, y:y + p, x:x + p]
        hi = hr_img[idx, :, y * s:(y + p) * s, x * s:(x + p) * s]
        k = int(torch.randint(4, ()))
        lo, hi = torch.rot90(lo, k, (2, 3)), torch.rot90(hi, k, (2, 3))
        if torch.rand(()) < 0.5:
            lo, hi = lo.flip(3), hi.flip(3)
        loss = F.l1_loss(model(lo), hi)
        opt.zero_grad()
        loss.backward()
        opt.step()
        steps += 1
        if est_steps is None and steps == 20:  # cosine over the steps the time allows, estimated once
            est_steps = max(21, int(seconds / ((time.perf_counter() - t0) / 20)))
        if est_steps is not None:
            for g in opt.param_groups:
                g["lr"] = lr * 0.5 * (1 + math.cos(math.pi * min(1.0, steps / est_steps)))
    out = {"steps": steps, "seconds": time.perf_counter() - t0}
    model.eval()
    for split in (eval_split,) if isinstance(eval_split, str) else eval_split:
        lo, hi, _ = load(path, split)
        sums = MetricSums()
        with torch.no_grad():
            for a in range(0, len(lo), 32):
                sums.update(model(lo[a:a + 32]), hi[a:a + 32])
        out.update({f"{split}_{k}": v for k, v in sums.means().items()})
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data")
    ap.add_argument("--seconds", type=float, default=120)
    ap.add_argument("--features", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(json.dumps(train_plain(args.data, args.seconds, features=args.features)))
