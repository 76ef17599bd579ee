"""Percentile bootstrap confidence intervals over test images.

Every version of the test images is resampled with the *same* seeded draws of image indices, so the
intervals of two versions come from paired resamples of the same images, and a difference between two versions
(:func:`paired_comparison`) gets its interval from the per-draw differences.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["bootstrap", "draw", "intervals", "paired_comparison"]

Draws = tuple[dict[str, float], dict[str, np.ndarray]]  # (point estimates, per-draw values) of every metric


def draw(metric_fn: Callable[[np.ndarray], dict[str, float]], n: int, resamples: int = 1000,
         seed: int = 0) -> Draws:
    """Point estimates ``metric_fn(all indices)`` and each metric's values on ``resamples`` draws of n indices
    with replacement (seeded by ``seed``: two calls with the same n, resamples and seed use the same draws).
    A metric a draw leaves undefined is NaN there."""
    point = metric_fn(np.arange(n))
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {k: [] for k in point}
    for _ in range(resamples):
        values = metric_fn(rng.integers(0, n, n))
        for k in draws:
            draws[k].append(values.get(k, np.nan))
    return point, {k: np.asarray(v, dtype=np.float64) for k, v in draws.items()}


def _interval(value: float, arr: np.ndarray, level: float) -> dict[str, float]:
    tail = 100 * (1 - level) / 2
    ok = arr[np.isfinite(arr)]
    lo, hi = (np.percentile(ok, [tail, 100 - tail]) if ok.size else (np.nan, np.nan))
    return {"value": float(value), "lo": float(lo), "hi": float(hi)}


def intervals(point: dict[str, float], draws: dict[str, np.ndarray], level: float = 0.95) -> dict[str, dict[str, float]]:
    """``{metric: {"value", "lo", "hi"}}`` from :func:`draw`'s output (percentile interval of the finite draws)."""
    return {k: _interval(v, draws[k], level) for k, v in point.items()}


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
    return intervals(*draw(metric_fn, n, resamples, seed), level=level)


def paired_comparison(version: Draws, base: Draws, top: Draws, level: float = 0.95) -> dict[str, dict[str, dict]]:
    """How ``version`` (an SR version) compares with ``base`` (bicubic) against ``top`` (HR), per metric, each with
    a percentile interval over the paired draws (all three from :func:`draw` with the same n, resamples and seed):

    * ``vs_bicubic``: version − base (positive = higher than bicubic);
    * ``recovered``: (version − base) / (top − base), the share of the bicubic -> HR difference the version
      recovers (1 = as good as HR, 0 = no better than bicubic, < 0 = worse); undefined (NaN) where top = base.
    """
    (pv, dv), (pb, db), (pt, dt) = version, base, top
    out = {}
    for k in pv:
        if k not in pb or k not in pt:
            continue
        gain, span = dv[k] - db[k], dt[k] - db[k]
        with np.errstate(divide="ignore", invalid="ignore"):
            share = np.where(span != 0, gain / np.where(span != 0, span, 1.0), np.nan)
        point_span = pt[k] - pb[k]
        out[k] = {"vs_bicubic": _interval(pv[k] - pb[k], gain, level),
                  "recovered": _interval((pv[k] - pb[k]) / point_span if point_span else float("nan"), share,
                                         level)}
    return out
