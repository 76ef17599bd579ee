"""Seeded train/val/test splits of a store file, stratified by class label."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from lensearch.data.h5format import SPLITS
from lensearch.errors import UserError

__all__ = ["make_splits"]


def make_splits(labels: np.ndarray, fractions: Sequence[float] = (0.8, 0.1, 0.1),
                seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded splits stratified by label: ``{"train","val","test"}`` -> sorted int64 row indices.

    Rows are shuffled within each class and interleaved by their relative rank in the class, so every
    prefix of the order has (nearly) the class mix of the whole; the order is then cut at the global
    fractions. A split with a positive fraction gets at least one row when there are enough rows.
    """
    fr = [float(f) for f in fractions]
    if len(fr) != 3 or any(not math.isfinite(f) or f < 0 for f in fr) or abs(sum(fr) - 1) > 1e-6:
        raise UserError(f"split fractions: expected three non-negative numbers (train, val, test) summing "
                        f"to 1, got {tuple(fractions)}")
    labels = np.asarray(labels).reshape(-1)
    n = labels.size
    rng = np.random.default_rng(seed)
    keys = np.empty(n)
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        keys[rng.permutation(rows)] = (np.arange(rows.size) + rng.random()) / rows.size
    order = np.lexsort((rng.random(n), keys))
    n_val, n_test = (int(round(f * n)) for f in fr[1:])
    if n >= 3:
        n_val, n_test = (max(k, 1) if f > 0 else k for k, f in zip((n_val, n_test), fr[1:]))
    n_train = n - n_val - n_test
    if n_train < 0 or (fr[0] > 0 and n_train == 0 and n > 0):
        raise UserError(f"split fractions {tuple(fractions)} leave no training rows out of {n}")
    cuts = np.split(order, [n_train, n_train + n_val])
    return {name: np.sort(part).astype(np.int64) for name, part in zip(SPLITS, cuts)}
