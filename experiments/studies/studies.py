"""The study's pure parts: what the questions are, turning measured numbers into tables and findings, the hardware
label, the per-question README and the README's marked headline section.

Nothing here starts Ray, trains or reads MLflow: ``run.py`` measures and hands plain dicts and lists to these
functions, and ``tests/experiments/test_studies.py`` checks them on constructed numbers. Every sentence that states
a number is built from the numbers passed in.
"""

from __future__ import annotations

import math
import platform
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
BEGIN, END = "<!-- study:begin -->", "<!-- study:end -->"
BOOTSTRAP = 2000

# Published DeepLense super-resolution figures (Model I-like simulations, 75 -> 150 px, images in [0, 1]); see
# /work/shared/STACK_NOTES.md and experiments/benchmarks/README.md. Their SSIM is scikit-image's default (7x7 uniform
# window), so it compares with our ssim_skimage column, not with val_ssim (Gaussian 11/1.5).
PUBLISHED = {"bicubic_psnr": (40.1, 41.6), "best_psnr": (42.2, 42.4), "best_ssim_skimage": 0.978}


@dataclass(frozen=True)
class Question:
    name: str
    title: str
    ask: str
    yamls: tuple[str, ...]            # search files in the question's folder, in run order
    cpu_minutes: float                # expected wall time of the cpu scale on 2 cores (data and report included)
    gpu_hours: float


QUESTIONS: dict[str, Question] = {q.name: q for q in (
    Question("architectures", "Architectures under the same compute",
             "Which SR architecture gives the best images of Model-I-like lenses when every family gets the same "
             "compute: bicubic, FSRCNN/ESPCN-class, SPAN (the efficient model), RDN, SRResNet, RRDB, SRGAN, ESRGAN, "
             "a SwinIR-type transformer and an SR3-style diffusion model?",
             ("espcn.yaml", "span.yaml", "rdn.yaml", "srresnet.yaml", "rrdb.yaml", "srgan.yaml", "esrgan.yaml",
              "swinir.yaml", "diffusion.yaml"), 47, 4.8),
    Question("preprocessing", "Normalization and augmentation",
             "What do normalization (none / minmax / zscore / log / asinh) and augmentation (flips, 90-degree "
             "rotations, LR noise) do to a fixed SR model: importance and effect sizes with uncertainty.",
             ("preprocessing.yaml",), 10, 2.2),
    Question("optimisation", "Optimiser, schedule, monitored metric, patch size, loss weights",
             "Which optimisation choices matter for a fixed SR model: optimizer, learning-rate schedule, the "
             "monitored metric that picks the kept checkpoint, patch size, pixel loss and SSIM weight.",
             ("optimisation.yaml",), 10, 2.2),
    Question("search_efficiency", "Search efficiency at equal compute",
             "Does ASHA + TPE find better models than random search, and than TPE without early stopping, at "
             "equal compute, over several seeds?",
             ("asha_tpe.yaml", "random.yaml", "tpe.yaml"), 17, 3.9),
    Question("downstream", "Does SR help the science?",
             "Substructure classification, lens finding and lens-parameter regression on LR (LR-trained "
             "network), bicubic, SR and HR images.", ("sr.yaml",), 12, 1.0),
)}


# ------------------------------------------------------------------------------------------ hardware
def hardware_label(cpuinfo: str | None = None, cores: int | None = None, gpus: Sequence[str] = (),
                   memory_gib: float | None = None) -> str:
    """'AMD EPYC, 2 CPU cores, 24 GiB, no GPU' from /proc/cpuinfo text, the core count and the GPU names."""
    model = None
    for line in (cpuinfo or "").splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "Model", "Hardware") and value.strip():
            model = value.strip()
            break
    model = re.sub(r"\s+", " ", model or platform.processor() or platform.machine() or "unknown CPU")
    parts = [model, f"{cores} CPU core{'s' if cores != 1 else ''}" if cores else "? CPU cores"]
    if memory_gib:
        parts.append(f"{memory_gib:.0f} GiB")
    if gpus:
        names: dict[str, int] = {}
        for g in gpus:
            names[g] = names.get(g, 0) + 1
        parts.append(", ".join(f"{n} x {g}" for g, n in names.items()))
    else:
        parts.append("no GPU")
    return ", ".join(parts)


# ------------------------------------------------------------------------------------------ statistics
def mean_ci(values: Iterable[float], seed: int = 0, level: float = 0.95) -> tuple[float, float, float]:
    """Mean and percentile-bootstrap CI of the mean (NaN bounds for fewer than 2 values)."""
    y = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if y.size == 0:
        return float("nan"), float("nan"), float("nan")
    if y.size == 1:
        return float(y[0]), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    boots = y[rng.integers(0, y.size, (BOOTSTRAP, y.size))].mean(1)
    q = (1 - level) / 2
    return float(y.mean()), float(np.quantile(boots, q)), float(np.quantile(boots, 1 - q))


def paired_diff_ci(a: Sequence[float], b: Sequence[float], seed: int = 0,
                   level: float = 0.95) -> tuple[float, float, float]:
    """Mean of a - b over paired images with a percentile-bootstrap CI (the same draws for both)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.shape != b.shape:
        raise ValueError(f"paired values need equal lengths, got {a.shape} and {b.shape}")
    return mean_ci(a - b, seed, level)


def gap_closed_ci(model: Sequence[float], bicubic: Sequence[float], ceiling: Sequence[float], seed: int = 0,
                  level: float = 0.95) -> tuple[float, float, float]:
    """Share of the bicubic -> noise-ceiling PSNR gap a model closes, (mean m - mean b) / (mean c - mean b), with a
    bootstrap CI over images (each draw recomputes the three means on the same images)."""
    m, b, c = (np.asarray(x, float) for x in (model, bicubic, ceiling))
    gap = c.mean() - b.mean()
    if not gap > 0:
        return float("nan"), float("nan"), float("nan")
    point = float((m.mean() - b.mean()) / gap)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, m.size, (BOOTSTRAP, m.size))
    boots = (m[idx].mean(1) - b[idx].mean(1)) / (c[idx].mean(1) - b[idx].mean(1))
    q = (1 - level) / 2
    return point, float(np.quantile(boots, q)), float(np.quantile(boots, 1 - q))


def fmt_ci(mean: float, lo: float, hi: float, digits: int = 2, unit: str = "", pct: bool = False) -> str:
    """'1.23 [0.98, 1.40] dB' (or '45.1 % [40.2, 50.3]'); a lone value when the interval is undefined."""
    if mean is None or not math.isfinite(mean):
        return "-"
    k = 100.0 if pct else 1.0
    u = " %" if pct else unit
    d = 1 if pct else digits
    if lo is None or hi is None or not (math.isfinite(lo) and math.isfinite(hi)):
        return f"{k * mean:.{d}f}{u}"
    return f"{k * mean:.{d}f}{u} [{k * lo:.{d}f}, {k * hi:.{d}f}]"


# ------------------------------------------------------------------------------------------ question 1
def architecture_summary(per_image: dict[str, dict[str, Sequence[float]]], info: dict[str, dict[str, Any]] | None
                         = None, seed: int = 0) -> dict[str, Any]:
    """Rank the families by mean test PSNR.

    ``per_image``: ``{"bicubic": {...}, "noise_ceiling": {"psnr": [...]}, family: {"psnr": [...], "ssim": [...],
    "ssim_skimage": [...]}}``, the same test images in the same order for every entry. ``info``: per family extra
    columns (params, trials, the search's val_psnr). Returns ``rows`` (best first; bicubic and the ceiling last) and
    ``findings`` (sentences with 95 % bootstrap intervals over the test images).
    """
    info = info or {}
    bic = per_image["bicubic"]
    ceil = per_image.get("noise_ceiling", {}).get("psnr")
    families = [k for k in per_image if k not in ("bicubic", "noise_ceiling")]
    rows = []
    for fam in families:
        s = per_image[fam]
        gain = paired_diff_ci(s["psnr"], bic["psnr"], seed)
        gap = gap_closed_ci(s["psnr"], bic["psnr"], ceil, seed) if ceil is not None else (float("nan"),) * 3
        rows.append({"model": fam, "test_psnr": float(np.mean(s["psnr"])), "gain_db": gain[0],
                     "gain_lo": gain[1], "gain_hi": gain[2], "gap_closed": gap[0], "gap_lo": gap[1], "gap_hi": gap[2],
                     "test_ssim": float(np.mean(s["ssim"])) if "ssim" in s else None,
                     "test_ssim_skimage": float(np.mean(s["ssim_skimage"])) if "ssim_skimage" in s else None,
                     "n": len(s["psnr"]), **info.get(fam, {})})
    rows.sort(key=lambda r: -r["test_psnr"])
    for ref in ("bicubic", "noise_ceiling"):
        if ref in per_image:
            s = per_image[ref]
            rows.append({"model": ref, "test_psnr": float(np.mean(s["psnr"])), "gain_db": 0.0 if ref == "bicubic"
                         else float(np.mean(s["psnr"]) - np.mean(bic["psnr"])), "gain_lo": None, "gain_hi": None,
                         "gap_closed": 0.0 if ref == "bicubic" else 1.0, "gap_lo": None, "gap_hi": None,
                         "test_ssim": float(np.mean(s["ssim"])) if "ssim" in s else None,
                         "test_ssim_skimage": float(np.mean(s["ssim_skimage"])) if "ssim_skimage" in s else None,
                         "n": len(s["psnr"]), "reference": True})
    findings = []
    ranked = [r for r in rows if not r.get("reference")]
    if ranked:
        top = ranked[0]
        findings.append(
            f"{top['model']} is best: test PSNR {top['test_psnr']:.2f} dB, "
            f"{fmt_ci(top['gain_db'], top['gain_lo'], top['gain_hi'], unit=' dB')} over bicubic "
            f"({np.mean(bic['psnr']):.2f} dB) on {top['n']} test images"
            + (f", closing {fmt_ci(top['gap_closed'], top['gap_lo'], top['gap_hi'], pct=True)} of the "
               f"bicubic -> noise-ceiling gap (ceiling {np.mean(ceil):.2f} dB)" if ceil is not None else "") + ".")
        if len(ranked) > 1:
            second = ranked[1]
            d = paired_diff_ci(per_image[top["model"]]["psnr"], per_image[second["model"]]["psnr"], seed)
            sep = d[1] > 0 or d[2] < 0
            findings.append(
                f"{top['model']} vs the runner-up {second['model']}: {fmt_ci(*d, unit=' dB')} "
                + ("(the interval excludes 0: a real difference on these images)." if sep else
                   "(the interval includes 0: not distinguishable on these images)."))
            tied = [r["model"] for r in ranked[1:]
                    if not paired_diff_ci(per_image[top["model"]]["psnr"], per_image[r["model"]]["psnr"], seed)[1] > 0]
            if tied:
                findings.append(f"Not distinguishable from the best (paired 95 % CI of the difference includes 0): "
                                f"{', '.join(tied)}.")
        worse = [r["model"] for r in ranked if r["gain_hi"] is not None and math.isfinite(r["gain_hi"])
                 and r["gain_hi"] < 0]
        if worse:
            findings.append(f"Worse than bicubic on the test images (CI below 0): {', '.join(worse)}.")
        flat = [r["model"] for r in ranked if r["gain_lo"] is not None and math.isfinite(r["gain_lo"])
                and r["gain_lo"] <= 0 <= r["gain_hi"]]
        if flat:
            findings.append(f"Not distinguishable from bicubic: {', '.join(flat)}.")
    return {"rows": rows, "findings": findings}


def published_comparison(rows: list[dict[str, Any]], noise_ceiling_psnr: float | None,
                         published: dict[str, Any] = PUBLISHED, lr_mode: str | None = None) -> dict[str, Any]:
    """Our bicubic and best model next to the published DeepLense numbers, in both SSIM conventions, with generated
    sentences on where the data differ."""
    ours = {r["model"]: r for r in rows}
    bic = ours.get("bicubic")
    best = next((r for r in rows if not r.get("reference")), None)
    lo, hi = published["bicubic_psnr"]
    blo, bhi = published["best_psnr"]
    table = [
        ["bicubic PSNR (dB)", f"{lo:.1f}-{hi:.1f}", f"{bic['test_psnr']:.2f}" if bic else "-"],
        ["best model PSNR (dB)", f"{blo:.1f}-{bhi:.1f}", f"{best['test_psnr']:.2f} ({best['model']})" if best else "-"],
        ["best model gain over bicubic (dB)", f"{blo - hi:.1f}-{bhi - lo:.1f}",
         f"{best['gain_db']:.2f}" if best else "-"],
        ["best model SSIM, skimage 7x7 (published convention)", f"{published['best_ssim_skimage']:.3f}",
         f"{best['test_ssim_skimage']:.4f}" if best and best.get("test_ssim_skimage") is not None else "-"],
        ["best model SSIM, Gaussian 11/1.5 (lensearch val_ssim)", "not published",
         f"{best['test_ssim']:.4f}" if best and best.get("test_ssim") is not None else "-"],
        ["noise ceiling PSNR (noise-free HR vs noisy HR, dB)", "not published",
         f"{noise_ceiling_psnr:.2f}" if noise_ceiling_psnr is not None else "-"],
    ]
    notes = []
    if bic:
        b = bic["test_psnr"]
        where = ("inside" if lo <= b <= hi else "below" if b < lo else "above")
        notes.append(f"Our bicubic baseline ({b:.2f} dB) is {where} the published bicubic range ({lo:.1f}-{hi:.1f} dB)"
                     + ("" if where == "inside" else f", by {min(abs(b - lo), abs(b - hi)):.2f} dB") + ": the "
                     "simulation's difficulty for interpolation matches theirs " + ("closely." if where == "inside"
                                                                                     else "only roughly."))
    if best and bic:
        g = best["gain_db"]
        pub_gain = ((blo - hi), (bhi - lo))
        notes.append(f"Our best gain over bicubic is {g:.2f} dB against {pub_gain[0]:.1f}-{pub_gain[1]:.1f} dB "
                     f"published: " + ("larger" if g > pub_gain[1] else "smaller" if g < pub_gain[0] else "comparable")
                     + ". Gains compare across data sets only as far as the targets' noise allows: ours are noisy "
                       "HR images whose noise no model can predict (the noise ceiling below); the published tables do "
                       "not state a noise ceiling for their HR targets.")
    if noise_ceiling_psnr is not None and best:
        notes.append(f"Here the noisy HR caps PSNR at the noise ceiling ({noise_ceiling_psnr:.2f} dB); our best model "
                     f"is {noise_ceiling_psnr - best['test_psnr']:.2f} dB below it. The SSIM of both conventions "
                     f"differ by {abs((best.get('test_ssim_skimage') or float('nan')) - (best.get('test_ssim') or float('nan'))):.4f} "
                     f"on the same images, so an SSIM is compared with a published one only in the skimage column.")
    how = {"instrument": "simulated as the same sky seen by a coarser instrument with its own PSF and noise "
                         "(lr_mode 'instrument'), not a down-sampled HR",
           "degrade": "the noise-free HR blurred, block-averaged and given noise (lr_mode 'degrade')"}.get(
        lr_mode or "", f"made by lr_mode '{lr_mode}'" if lr_mode else "of unrecorded origin")
    notes.append(f"Data differences (why numbers differ besides the models): our LR images are {how}; the simulation's sources, subhalo populations and noise levels follow DeepLense "
                 "Model I in kind but not draw by draw; the scaled-down runs use far fewer training images and "
                 "steps than the published models; and metrics here are on float images scaled by the reference HR's "
                 "range (the identity for the published [0, 1] images), never on uint8.")
    return {"head": ["", "published DeepLense (75 -> 150 px)", "this study"], "table": table, "notes": notes}


# ------------------------------------------------------------------------------------------ questions 2, 3
def effect_tables(points: list[tuple[dict[str, Any], float]], metric_label: str, params: Sequence[str] | None = None,
                  mode: str = "max", seed: int = 0) -> dict[str, Any]:
    """Per-parameter effects: for each categorical (or few-valued) parameter, each value's mean with a 95 % bootstrap
    CI and its difference from the best value (CI of the difference); numeric parameters get their Spearman rank
    correlation with the outcome. ``points`` are ``(params, value)``; ``params`` restricts and orders the names."""
    names = sorted({k for p, _ in points for k in p}) if params is None else list(params)
    tables, ranked = [], []   # ranked: (effect size, sentences); the largest effect's sentence comes first
    for name in names:
        vals = [(p[name], y) for p, y in points if name in p and y is not None and math.isfinite(y)]
        distinct = {_label(v) for v, _ in vals}
        if len(distinct) < 2:
            continue
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v, _ in vals)
        # a searched range (values rarely repeat) is numeric; a few repeated values (patch sizes) are categories
        if numeric and (len(distinct) > 6 or len(distinct) == len(vals)):
            x = np.asarray([float(v) for v, _ in vals])
            y = np.asarray([y for _, y in vals])
            rho = _spearman(x, y) if len(vals) >= 5 else float("nan")  # a rank correlation of < 5 trials says nothing
            tables.append({"param": name, "kind": "numeric", "n": len(vals), "spearman": rho})
            if not math.isfinite(rho):
                continue
            ranked.append((-1.0 + abs(rho) / 10,  # after the categorical ones
                           [f"{name}: Spearman rank correlation with {metric_label} {rho:+.2f} over {len(vals)} "
                            f"trials" + (" (strong)" if abs(rho) >= 0.5 else " (weak)" if abs(rho) < 0.3 else "")
                            + "."]))
            continue
        groups: dict[str, list[float]] = {}
        for v, y in sorted(vals, key=lambda vy: (str(type(vy[0])), vy[0])):
            groups.setdefault(_label(v), []).append(float(y))
        order = sorted(groups, key=lambda k: np.mean(groups[k]), reverse=mode == "max")
        best = order[0]
        rows = []
        for k in order:
            m, lo, hi = mean_ci(groups[k], seed)
            d = _diff_ci(groups[best], groups[k], seed) if k != best else (0.0, float("nan"), float("nan"))
            rows.append({"value": k, "n": len(groups[k]), "mean": m, "lo": lo, "hi": hi, "diff_from_best": d[0],
                         "diff_lo": d[1], "diff_hi": d[2]})
        tables.append({"param": name, "kind": "categorical", "rows": rows})
        tables[-1]["spread"] = abs(rows[0]["mean"] - rows[-1]["mean"])
        sentences = []
        if len(order) >= 2 and len(groups[order[0]]) >= 2 and len(groups[order[1]]) >= 2:
            r2 = rows[1]
            sep = math.isfinite(r2["diff_lo"]) and (r2["diff_lo"] > 0 or r2["diff_hi"] < 0)
            sentences.append(
                f"{name}: {best} ({rows[0]['mean']:.3f}, n={rows[0]['n']}) "
                + ("beats" if sep else "is not distinguishable from") + f" the runner-up {r2['value']} "
                f"({r2['mean']:.3f}, n={r2['n']}) on {metric_label}: difference "
                f"{fmt_ci(r2['diff_from_best'], r2['diff_lo'], r2['diff_hi'], digits=3)}.")
            last = rows[-1]
            if len(order) > 2 and last["n"] >= 2 and math.isfinite(last["diff_lo"]) and last["diff_lo"] > 0:
                sentences.append(f"{name}: the worst value, {last['value']}, is {last['diff_from_best']:.3f} below "
                                 f"{best} [95 % CI {last['diff_lo']:.3f}, {last['diff_hi']:.3f}].")
        if sentences:
            ranked.append((tables[-1]["spread"], sentences))
    ranked.sort(key=lambda r: -r[0])
    return {"tables": tables, "findings": [f for _, fs in ranked for f in fs]}


def importance_findings(importance: dict[str, Any], top: int = 3) -> list[str]:
    """One sentence per evaluator from the report's importance block (``{evaluator: {param: share}}``)."""
    out = []
    for ev, vals in importance.items():
        if ev == "skipped" or not isinstance(vals, dict) or not vals:
            continue
        items = list(vals.items())[:top]
        out.append(f"{ev} importance (share of the objective's variation): "
                   + ", ".join(f"{k} {v:.2f}" for k, v in items) + ".")
    for ev, why in (importance.get("skipped") or {}).items():
        out.append(f"{ev} could not rank these trials: {why}.")
    return out


def _label(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def _diff_ci(a: Sequence[float], b: Sequence[float], seed: int = 0, level: float = 0.95) -> tuple[float, float, float]:
    a, b = np.asarray(a, float), np.asarray(b, float)
    point = float(a.mean() - b.mean())
    if a.size < 2 or b.size < 2:
        return point, float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    boots = (a[rng.integers(0, a.size, (BOOTSTRAP, a.size))].mean(1)
             - b[rng.integers(0, b.size, (BOOTSTRAP, b.size))].mean(1))
    q = (1 - level) / 2
    return point, float(np.quantile(boots, q)), float(np.quantile(boots, 1 - q))


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    def ranks(v):
        order = np.argsort(v, kind="mergesort")
        r = np.empty(v.size)
        r[order] = np.arange(v.size)
        for val in np.unique(v):  # ties: average rank
            m = v == val
            r[m] = r[m].mean()
        return r
    rx, ry = ranks(x), ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


# ------------------------------------------------------------------------------------------ question 4
def best_so_far(records: list[dict[str, Any]], metric: str = "val_psnr") -> list[tuple[float, float]]:
    """``[(wall seconds, best value so far)]`` from a search's reports in arrival order."""
    out, best = [], -math.inf
    for r in sorted(records, key=lambda r: r["wall"]):
        v = r.get(metric)
        if v is not None and math.isfinite(v) and v > best:
            best = v
            out.append((float(r["wall"]), float(v)))
    return out


def value_at(curve: list[tuple[float, float]], t: float) -> float:
    """The best-so-far value at wall time ``t`` (NaN before the first report)."""
    v = float("nan")
    for when, value in curve:
        if when <= t:
            v = value
    return v


def efficiency_summary(arms: dict[str, dict[int, list[dict[str, Any]]]], budget_s: float,
                       reference_arm: str = "random", metric: str = "val_psnr") -> dict[str, Any]:
    """Compare search arms at equal compute. ``arms``: ``{arm: {seed: [report records with 'wall', metric,
    'trial']}}``. Per arm: best value at the end (mean, per seed, bootstrap CI over seeds), best at half the budget,
    trials started, reports; per seed the paired difference against ``reference_arm``, and when each arm first
    reached the reference arm's final best (as a share of the budget)."""
    rows, per_seed, findings = [], {}, []
    ref = arms.get(reference_arm, {})
    for arm, seeds in arms.items():
        finals, halves, trials, reports, reach = [], [], [], [], []
        for seed, recs in sorted(seeds.items()):
            curve = best_so_far(recs, metric)
            final = curve[-1][1] if curve else float("nan")
            finals.append(final)
            halves.append(value_at(curve, budget_s / 2))
            trials.append(len({r["trial"] for r in recs}))
            reports.append(len(recs))
            target_curve = best_so_far(ref.get(seed, []), metric)
            if target_curve:
                target = target_curve[-1][1]
                hit = next((w for w, v in curve if v >= target), None)
                reach.append(hit / budget_s if hit is not None else float("nan"))
            per_seed.setdefault(arm, {})[seed] = final
        m, lo, hi = mean_ci(finals)
        rows.append({"arm": arm, "seeds": len(finals), "final_mean": m, "final_lo": lo, "final_hi": hi,
                     "final_sd": float(np.std(finals, ddof=1)) if len(finals) > 1 else float("nan"),
                     "half_mean": float(np.nanmean(halves)) if np.isfinite(halves).any() else float("nan"),
                     "trials_mean": float(np.mean(trials)) if trials else 0.0,
                     "reports_mean": float(np.mean(reports)) if reports else 0.0,
                     "reached_reference": sum(1 for x in reach if math.isfinite(x)),
                     "reach_share_median": float(np.nanmedian(reach)) if np.isfinite(reach).any() else float("nan"),
                     "per_seed": {str(s): v for s, v in per_seed.get(arm, {}).items()}})
    rows.sort(key=lambda r: -r["final_mean"] if math.isfinite(r["final_mean"]) else math.inf)
    for row in rows:
        arm = row["arm"]
        if arm == reference_arm or reference_arm not in per_seed:
            continue
        common = sorted(set(per_seed[arm]) & set(per_seed[reference_arm]))
        diffs = [per_seed[arm][s] - per_seed[reference_arm][s] for s in common]
        diffs = [d for d in diffs if math.isfinite(d)]
        if not diffs:
            continue
        m, lo, hi = mean_ci(diffs)
        row["diff_vs_reference"] = (m, lo, hi)
        wins = sum(d > 0 for d in diffs)
        sep = math.isfinite(lo) and (lo > 0 or hi < 0)
        findings.append(
            f"{arm} vs {reference_arm}: final best {metric} differs by {fmt_ci(m, lo, hi, digits=3, unit=' dB')} "
            f"(paired over {len(diffs)} seeds; better in {wins} of {len(diffs)})"
            + (": a consistent difference." if sep else
               (": too few seeds for an interval." if not math.isfinite(lo) else
                ": the interval includes 0, so no consistent difference at this budget.")))
        if row["reached_reference"]:
            findings.append(f"{arm} reached {reference_arm}'s final best in {row['reached_reference']} of "
                            f"{row['seeds']} seeds, after a median {100 * row['reach_share_median']:.0f} % of the "
                            f"{budget_s:.0f} s budget.")
        else:
            findings.append(f"{arm} never reached {reference_arm}'s final best within the {budget_s:.0f} s budget.")
    if rows:
        top = rows[0]
        findings.insert(0, f"Highest mean final best {metric}: {top['arm']} "
                           f"({fmt_ci(top['final_mean'], top['final_lo'], top['final_hi'], digits=3, unit=' dB')} "
                           f"over {top['seeds']} seeds; bootstrap over seeds), "
                           f"{top['trials_mean']:.1f} trials per search on average.")
    return {"rows": rows, "findings": findings}


# ------------------------------------------------------------------------------------------ question 5
# the metric each task's headline row reads, and whether higher is better
TASK_METRICS = {"classify": ("auc_macro", True), "find": ("auc_macro", True), "regress": ("mae_theta_E", False)}


def downstream_summary(results: dict[str, Any]) -> dict[str, Any]:
    """Tables and findings from ``lensearch downstream``'s ``downstream.json``: per task the headline metric of
    every version (HR, bicubic, SR:..., LR-trained) with its 95 % bootstrap interval; for each SR version the
    paired SR - bicubic difference (``comparisons``: the same test images resampled together) and, only where HR
    and bicubic themselves differ (intervals apart), the share of the bicubic -> HR difference SR recovers. A
    share of a difference that is noise (HR and bicubic within each other's interval) would be a meaningless
    ratio, so none is stated then."""
    rows, findings = [], []
    for task, body in (results.get("tasks") or {}).items():
        metric, higher = TASK_METRICS.get(task, (None, True))
        versions = body.get("versions") or {}
        if metric is None or not versions:
            continue
        if not any(metric in (v.get("metrics") or {}) for v in versions.values()):
            metric = next(iter(next(iter(versions.values()))["metrics"]))
        vals = {}
        for name, v in versions.items():
            m = (v.get("metrics") or {}).get(metric)
            if m is None:
                continue
            vals[name] = m
            rows.append({"task": task, "version": name, "metric": metric, "value": m.get("value"),
                         "lo": m.get("lo"), "hi": m.get("hi"), "n_test": body.get("n_test")})
        hr, bic = vals.get("HR"), vals.get("bicubic")
        srs = {k: v for k, v in vals.items() if k.startswith("SR:")}
        lrt = vals.get("LR-trained")
        word = "higher" if higher else "lower"
        if hr and bic and hr.get("value") is not None and bic.get("value") is not None:
            for name, s in srs.items():
                if s.get("value") is None:
                    continue
                pair = ((body.get("comparisons") or {}).get(name) or {}).get(metric) or {}
                text = (f"{task} ({metric}, {word} is better, {body.get('n_test')} test images): {name} {_v(s)} "
                        f"vs bicubic {_v(bic)} and HR {_v(hr)}")
                diff = pair.get("vs_bicubic")
                if diff and diff.get("value") is not None:
                    text += f"; SR - bicubic {_v(diff)} (paired)"
                    text += ": " + _verdict(diff, higher, "SR", "bicubic")
                else:
                    text += "; " + ("the SR and bicubic intervals overlap" if _overlap(s, bic) else
                                    _verdict(_apart(s, bic), higher, "SR", "bicubic"))
                span = hr["value"] - bic["value"]
                if _overlap(hr, bic) or not span:
                    text += "; HR and bicubic are not distinguishable on this task, so no share of their difference " \
                            "is stated."
                else:
                    rec = pair.get("recovered") or {}
                    share = rec.get("value") if rec.get("value") is not None else (s["value"] - bic["value"]) / span
                    text += (f"; SR recovers {fmt_ci(share, rec.get('lo'), rec.get('hi'), pct=True)} of the "
                             f"bicubic -> HR difference.")
                findings.append(text)
        if lrt and bic and lrt.get("value") is not None and bic.get("value") is not None:
            def versus(other: dict[str, Any]) -> str:
                if _overlap(lrt, other):
                    return "not distinguishable from"
                return "better than" if (lrt["value"] > other["value"]) == higher else "worse than"
            sr_vals = [s for s in srs.values() if s.get("value") is not None]
            findings.append(f"{task}: a network trained on bicubically upsampled LR images scores {_v(lrt)}: "
                            f"{versus(bic)} the HR-trained network on bicubic images ({_v(bic)})"
                            + "".join(f"; {versus(s)} SR ({_v(s)})" for s in sr_vals)
                            + " (95 % intervals apart or not).")
    return {"rows": rows, "findings": findings}


def _apart(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """An interval for a - b that excludes 0 on the side the two intervals are apart (unpaired fallback)."""
    gap = a["value"] - b["value"]
    return {"value": gap, "lo": gap, "hi": gap}


def _verdict(diff: dict[str, Any], higher: bool, a: str, b: str) -> str:
    lo, hi = diff.get("lo"), diff.get("hi")
    if lo is None or hi is None or (lo <= 0 <= hi):
        return f"{a} and {b} are not distinguishable (the interval includes 0)"
    better = (lo > 0) == higher
    return f"{a} is consistently {'better' if better else 'worse'} than {b}"


def _v(m: dict[str, Any]) -> str:
    return fmt_ci(m.get("value"), m.get("lo"), m.get("hi"), digits=3)


def _overlap(a: dict[str, Any], b: dict[str, Any]) -> bool:
    try:
        return not (a["lo"] > b["hi"] or b["lo"] > a["hi"])
    except (TypeError, KeyError):
        return True


# ------------------------------------------------------------------------------------------ documents
def md_table(head: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    def cell(v):
        if v is None or (isinstance(v, float) and not math.isfinite(v)):
            return "-"
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v).replace("|", "/")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def replace_section(text: str, body: str, begin: str = BEGIN, end: str = END) -> str:
    """``text`` with everything between the ``begin`` and ``end`` markers replaced by ``body`` (markers kept).
    Exactly one pair, in that order, must be present."""
    if text.count(begin) != 1 or text.count(end) != 1:
        raise ValueError(f"expected exactly one {begin} and one {end} marker, found {text.count(begin)} and "
                         f"{text.count(end)}")
    i, j = text.index(begin), text.index(end)
    if j < i:
        raise ValueError(f"{end} comes before {begin}")
    return text[: i + len(begin)] + "\n" + body.strip("\n") + "\n" + text[j:]


def headline_row(question: str, results: dict[str, Any] | None) -> list[str]:
    """One row of README's study table: question, scale and hardware, the headline, the folder link."""
    q = QUESTIONS[question]
    link = f"[{question}](experiments/studies/{question}/README.md)"
    if not results:
        return [link, q.title, "not run yet", f"`python experiments/studies/run.py {question}`"]
    scale = results.get("scale", "?") + (" (quick smoke run)" if results.get("quick") else "")
    return [link, q.title, f"{scale}; {results.get('hardware', '?')}; {results.get('date', '?')}",
            results.get("headline") or "(no headline)"]


def headline_section(all_results: dict[str, dict[str, Any] | None]) -> str:
    """The README's generated study section: a table over the questions (from each folder's results.json)."""
    rows = [headline_row(q, all_results.get(q)) for q in QUESTIONS]
    lines = ["_Generated by `python experiments/studies/headline.py` from `experiments/studies/*/results.json`; "
             "do not edit by hand. Runs on the 2-core CPU box are scaled down (see each folder)._", "",
             md_table(["question", "what", "run (scale; hardware; date)", "headline (measured)"], rows)]
    return "\n".join(lines)


def render_readme(question: str, results: dict[str, Any] | None) -> str:
    """A question folder's README.md: from its results (or, before a run, what will be run and how)."""
    q = QUESTIONS[question]
    cmd = f"python experiments/studies/run.py {question}"
    out = [f"# Study: {q.title}", "", q.ask, ""]
    out += ["Regenerate this folder (searches, report, this README):", "", "```bash",
            f"{cmd}                # 2-CPU scale (the `cpu` profiles): about {q.cpu_minutes:.0f} minutes on 2 cores",
            f"{cmd} --scale gpu    # the full-size study (the `gpu` profiles): about {q.gpu_hours:.1f} h on one GPU",
            f"{cmd} --quick        # a smoke run of the machinery (writes into _quick/, not here)", "```", "",
            "Search files: " + ", ".join(f"[`{y}`]({y})" for y in q.yamls) + ".", ""]
    if not results:
        out += ["**Not run yet.** This folder holds the search files; the run command fills in the measured "
                "results, the report (`report/`) and `results.json`.", ""]
        return "\n".join(out)
    quick = results.get("quick")
    out += [f"## Results ({'QUICK SMOKE RUN, not the study' if quick else 'measured'})", "",
            f"- Hardware: **{results.get('hardware')}**; scale `{results.get('scale')}`"
            + (" (scaled down for 2 CPU cores: smaller data, models and budgets than the `gpu` profiles; numbers "
               "are what this budget buys, not what the architectures can do)" if results.get("scale") == "cpu"
               else "") + ".",
            f"- Run {results.get('date')} in {results.get('wall_s', 0) / 60:.1f} minutes: "
            f"`{results.get('command')}`.",
            f"- Data: {results.get('data_label', '?')}.", ""]
    if results.get("headline"):
        out += [f"**Headline:** {results['headline']}", ""]
    for table in results.get("tables", []):
        out += [f"### {table['title']}", ""]
        if table.get("note"):
            out += [table["note"], ""]
        out += [md_table(table["head"], table["rows"]), ""]
    if results.get("findings"):
        out += ["### Findings (generated from the numbers above)", ""]
        out += [f"- {f}" for f in results["findings"]] + [""]
    if results.get("notes"):
        out += ["### Notes", ""] + [f"- {n}" for n in results["notes"]] + [""]
    if results.get("figures"):
        out += ["### Figures", "", f"Every figure is stamped with its hardware ({results.get('hardware')})."]
        for fig in results["figures"]:
            out += ["", f"![{fig['caption']}]({fig['path']})", "", f"*{fig['caption']}*"]
        out += [""]
    if results.get("report"):
        out += [f"The full search report (leaderboards, learning curves, importance, effects, physics): "
                f"[{results['report']}/report.md]({results['report']}/report.md).", ""]
    if results.get("searches"):
        out += ["Searches (MLflow parent runs in the work store, not committed): "
                + "; ".join(f"{s['name']} ({s.get('parent_run_id', '?')})" for s in results["searches"]) + ".", ""]
    return "\n".join(out)
