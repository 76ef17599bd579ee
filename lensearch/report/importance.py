"""Which choices mattered: parameter importance and per-parameter effects from a search's trials.

The trials are rebuilt into an Optuna study (:func:`build_study`: ``optuna.trial.create_trial`` with
distributions inferred from the logged values — strings and booleans categorical, integers and floats as
ranges, on a log scale when all values are positive and span a factor of 10 or more), and Optuna's evaluators
rank the parameters: **fANOVA** (a random forest's functional ANOVA; parameters present in every trial) and
**PED-ANOVA** (the share of the objective's top quantile each parameter explains; conditional parameters
too). Each trial counts with its objective at its best epoch.

**Effects** (:func:`effects`): for a categorical parameter, the mean objective per category with a 95 %
percentile-bootstrap confidence interval (:data:`BOOTSTRAP` resamples, seeded); for a numeric one, the
(value, objective) pairs. :func:`findings` turns the categorical effects into sentences, every number in them
computed from the trials.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["BOOTSTRAP", "Effect", "EFFECT_PARAMS", "build_study", "effects", "findings", "importances"]

BOOTSTRAP = 2000
# the training choices the report always shows an effect for, where the search varied them
EFFECT_PARAMS = ("model", "normalization", "augment", "optimizer", "scheduler", "train.batch_size", "loss",
                 "train.patch_size")
_SKIP = ("refit_of",)


def _kind(values: list[Any]) -> str:
    if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
        return "int"
    if all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) for v in values):
        return "float"
    return "categorical"


def _key(value: Any) -> Any:
    return value if isinstance(value, (str, int, float, bool)) or value is None else str(value)


def infer_distributions(param_sets: list[dict[str, Any]]) -> dict[str, Any]:
    """Optuna distributions for every parameter that takes more than one value across ``param_sets``."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    names = sorted({k for p in param_sets for k in p if k not in _SKIP})
    out = {}
    for name in names:
        values = [_key(p[name]) for p in param_sets if name in p]
        distinct = sorted(set(values), key=lambda v: (str(type(v)), str(v)))
        if len(distinct) < 2:
            continue
        kind = _kind(values)
        if kind == "categorical":
            out[name] = CategoricalDistribution(distinct)
            continue
        lo, hi = min(values), max(values)
        log = lo > 0 and hi / lo >= 10
        out[name] = (IntDistribution(int(lo), int(hi), log=log) if kind == "int"
                     else FloatDistribution(float(lo), float(hi), log=log))
    return out


def build_study(points: list[tuple[dict[str, Any], float]], direction: str):
    """An in-memory Optuna study holding one COMPLETE trial per ``(params, objective)`` point."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    dists = infer_distributions([p for p, _ in points])
    study = optuna.create_study(direction="maximize" if direction == "max" else "minimize")
    for params, value in points:
        use = {k: _key(v) for k, v in params.items() if k in dists}
        study.add_trial(optuna.trial.create_trial(params=use, distributions={k: dists[k] for k in use},
                                                  value=float(value)))
    return study


def importances(points: list[tuple[dict[str, Any], float]], direction: str, seed: int = 0) -> dict[str, Any]:
    """``{evaluator: {param: importance}}`` (importances sum to 1, best first) for fANOVA and PED-ANOVA, and
    ``{evaluator: reason}`` under ``"skipped"`` for those that could not run on these trials."""
    import optuna

    out: dict[str, Any] = {"skipped": {}}
    if len(points) < 2:
        out["skipped"] = {"fANOVA": f"{len(points)} scored trial(s); need at least 2",
                          "PED-ANOVA": f"{len(points)} scored trial(s); need at least 2"}
        return out
    study = build_study(points, direction)
    if not infer_distributions([p for p, _ in points]):
        out["skipped"] = dict.fromkeys(("fANOVA", "PED-ANOVA"), "no parameter took two values")
        return out
    evaluators = {"fANOVA": lambda: optuna.importance.FanovaImportanceEvaluator(seed=seed),
                  "PED-ANOVA": lambda: optuna.importance.PedAnovaImportanceEvaluator()}
    for name, make in evaluators.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                values = optuna.importance.get_param_importances(study, evaluator=make(), normalize=True)
            values = {k: float(v) for k, v in values.items() if math.isfinite(float(v))}
            if not values:
                raise ValueError("no importance computed")
            out[name] = dict(sorted(values.items(), key=lambda kv: -kv[1]))
        except Exception as err:  # an evaluator that cannot handle these trials is skipped, with the reason
            out["skipped"][name] = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
    return out


@dataclass
class Effect:
    """One parameter's effect on the objective."""

    param: str
    values: str                               # categorical | numeric
    groups: dict[str, list[float]]            # categorical: category -> objectives
    points: list[tuple[float, float]]         # numeric: (value, objective)

    def summary(self, seed: int = 0) -> dict[str, tuple[float, float, float, int]]:
        """category -> (mean, CI low, CI high, n), best mean first."""
        rng = np.random.default_rng(seed)
        out = {}
        for cat, ys in self.groups.items():
            mean, lo, hi = _mean_ci(np.asarray(ys), rng)
            out[cat] = (mean, lo, hi, len(ys))
        return out


def _mean_ci(y: np.ndarray, rng: np.random.Generator, level: float = 0.95) -> tuple[float, float, float]:
    if y.size == 1:
        return float(y[0]), float("nan"), float("nan")
    boots = y[rng.integers(0, y.size, (BOOTSTRAP, y.size))].mean(1)
    a = (1 - level) / 2
    return float(y.mean()), float(np.quantile(boots, a)), float(np.quantile(boots, 1 - a))


def _diff_ci(a: np.ndarray, b: np.ndarray, rng: np.random.Generator, level: float = 0.95) -> tuple[float, float]:
    boots = (a[rng.integers(0, a.size, (BOOTSTRAP, a.size))].mean(1)
             - b[rng.integers(0, b.size, (BOOTSTRAP, b.size))].mean(1))
    q = (1 - level) / 2
    return float(np.quantile(boots, q)), float(np.quantile(boots, 1 - q))


def _label(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def effects(points: list[tuple[dict[str, Any], float]]) -> list[Effect]:
    """The effect of every parameter that varied: :data:`EFFECT_PARAMS` (and their sub-keys) first."""
    dists = infer_distributions([p for p, _ in points])

    def order(name: str) -> tuple[int, str]:
        hits = [i for i, p in enumerate(EFFECT_PARAMS) if name == p or name.startswith(p + ".")]
        return (hits[0] if hits else len(EFFECT_PARAMS), name)

    out = []
    for name in sorted(dists, key=order):
        values = [(params[name], y) for params, y in points if name in params]
        kind = _kind([v for v, _ in values])
        few_ints = kind == "int" and len({v for v, _ in values}) <= 6  # e.g. batch or patch size: per value
        if kind == "categorical" or few_ints:
            groups: dict[str, list[float]] = {}
            for v, y in sorted(values, key=lambda vy: (str(type(vy[0])), vy[0] if few_ints else str(vy[0]))):
                groups.setdefault(_label(v), []).append(float(y))
            out.append(Effect(name, "categorical", groups, []))
        else:
            out.append(Effect(name, "numeric", {}, [(float(v), float(y)) for v, y in values]))
    return out


def findings(effect_list: list[Effect], metric: str, mode: str, seed: int = 0) -> list[str]:
    """One sentence per categorical effect with at least two categories of two or more trials: the best category
    against the runner-up, the difference of means with its 95 % bootstrap CI, and the trials it rests on."""
    unit = " dB" if metric.endswith("psnr") or metric.endswith("psnr_gain") else ""
    rng = np.random.default_rng(seed)
    lines = []
    for eff in effect_list:
        if eff.values != "categorical":
            continue
        groups = {k: np.asarray(v) for k, v in eff.groups.items() if len(v) >= 2}
        if len(groups) < 2:
            continue
        ranked = sorted(groups, key=lambda k: groups[k].mean(), reverse=mode == "max")
        best, second = ranked[0], ranked[1]
        diff = groups[best].mean() - groups[second].mean()
        lo, hi = _diff_ci(groups[best], groups[second], rng)
        n = groups[best].size + groups[second].size
        counts = f"over {n} trials ({groups[best].size} vs {groups[second].size})"
        if lo > 0 or hi < 0:  # the CI of the difference excludes 0
            lines.append(f"{eff.param}: {best} beats {second} on {metric} by {abs(diff):.3g}{unit} "
                         f"[95 % CI {lo:.3g}, {hi:.3g}] {counts}")
        else:
            lines.append(f"{eff.param}: {best} and {second} are not distinguishable on {metric} (difference "
                         f"{diff:.3g}{unit} [95 % CI {lo:.3g}, {hi:.3g}]) {counts}")
    return lines
