"""Percentile bootstrap confidence intervals over test images.

Every version of the test images is resampled with the *same* seeded draws of image indices, so the
intervals of two versions come from paired resamples of the same images.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["bootstrap"]


def bootstrap(metric_fn: Callable[[np.ndarray], dict[str, float]], n: int, resamples: int = 1000, seed: int = 0,
              level: float = 0.95) -> dict[str, dict[str, float]]:
    """Point estimates and percentile intervals of every metric ``metric_fn(indices)`` returns.

    Args:
        metric_fn: maps an index array (into the n test images) to ``{metric: value}``.
        n: number of test images; ``resamples`` draws of n indices with replacement (seeded by ``seed``).
        level: the interval's coverage (0.95 -> the 2.5th and 97.5th percentiles).

    Returns:
        ``{metric: {"value", "lo", "hi"}}``; ``lo``/``hi`` ignore draws where the metric is undefined (NaN,
        e.g. an AUC of a class absent from the draw) and are NaN when every draw is. With ``resamples``
        0 the interval is NaN.
    """
    point = metric_fn(np.arange(n))
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {k: [] for k in point}
    for _ in range(resamples):
        values = metric_fn(rng.integers(0, n, n))
        for k in draws:
            draws[k].append(values.get(k, np.nan))
    tail = 100 * (1 - level) / 2
    out = {}
    for k, v in point.items():
        arr = np.asarray(draws[k], dtype=np.float64)
        ok = arr[np.isfinite(arr)]
        lo, hi = (np.percentile(ok, [tail, 100 - tail]) if ok.size else (np.nan, np.nan))
        out[k] = {"value": float(v), "lo": float(lo), "hi": float(hi)}
    return out
