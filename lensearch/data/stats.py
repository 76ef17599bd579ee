"""Streaming scans of a store file: value ranges and NaN/inf counts, and a split's pixel statistics."""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from lensearch.data.h5format import IMAGE_KEYS, h5open, read_rows, split_indices
from lensearch.errors import UserError

__all__ = ["check_finite", "scan_values", "train_stats"]


def scan_values(path: str | os.PathLike, max_images: int | None = None,
                batch_size: int = 256) -> dict[str, dict[str, Any]]:
    """Per image dataset (``lr``, ``hr``, ``hr_clean``): finite min, max and mean, and ``nonfinite`` = the
    number of images containing NaN/inf. All rows, or ``max_images`` evenly spaced ones."""
    out: dict[str, dict[str, Any]] = {}
    with h5open(path) as f:
        n = f["hr"].shape[0]
        rows = np.arange(n) if max_images is None or max_images >= n else \
            np.unique(np.linspace(0, n - 1, max_images).astype(np.int64))
        for name in IMAGE_KEYS:
            if name not in f:
                continue
            lo, hi, total, count, bad = math.inf, -math.inf, 0.0, 0, 0
            for a in range(0, rows.size, batch_size):
                x = read_rows(f[name], rows[a:a + batch_size]).reshape(-1, int(np.prod(f[name].shape[1:])))
                ok = np.isfinite(x)
                bad += int((~ok).any(axis=1).sum())
                v = x[ok] if not ok.all() else x
                if v.size:
                    lo, hi = min(lo, float(v.min())), max(hi, float(v.max()))
                    total += float(v.sum(dtype=np.float64))
                    count += v.size
            out[name] = {"min": lo if count else math.nan, "max": hi if count else math.nan,
                         "mean": total / count if count else math.nan, "nonfinite": bad,
                         "images": int(rows.size)}
    return out


def check_finite(path: str | os.PathLike, batch_size: int = 256) -> dict[str, int]:
    """Full scan: the number of images containing NaN/inf in ``lr``, ``hr`` (and ``hr_clean``)."""
    return {k: v["nonfinite"] for k, v in scan_values(path, batch_size=batch_size).items()}


def train_stats(path: str | os.PathLike, split: str = "train", key: str = "lr", batch_size: int = 256,
                max_sample: int = 2_000_000, seed: int = 0) -> dict[str, float]:
    """Pixel statistics of ``key`` over a split: exact mean, std, min, max (streamed) and the
    percentiles p0.1, p1, p50, p99, p99.9 from a seeded subsample of at most ``max_sample`` pixels."""
    rows = split_indices(path, split)
    if rows.size == 0:
        raise UserError(f"{path}: split '{split}' is empty, no statistics to compute")
    rng = np.random.default_rng(seed)
    total = total_sq = 0.0
    count = 0
    lo, hi = math.inf, -math.inf
    samples = []
    with h5open(path) as f:
        ds = f[key]
        per_image = int(np.prod(ds.shape[1:]))
        keep = min(1.0, max_sample / (rows.size * per_image))
        for a in range(0, rows.size, batch_size):
            x = read_rows(ds, rows[a:a + batch_size]).astype(np.float64).ravel()
            total += x.sum()
            total_sq += np.square(x).sum()
            count += x.size
            lo, hi = min(lo, x.min()), max(hi, x.max())
            samples.append(x if keep >= 1 else x[rng.random(x.size) < keep])
    mean = total / count
    std = math.sqrt(max(total_sq / count - mean**2, 0.0))
    q = np.percentile(np.concatenate(samples), [0.1, 1, 50, 99, 99.9])
    return {"mean": float(mean), "std": std, "min": float(lo), "max": float(hi), "p0.1": float(q[0]),
            "p1": float(q[1]), "p50": float(q[2]), "p99": float(q[3]), "p99.9": float(q[4]),
            "n_images": int(rows.size), "n_pixels": int(count)}
