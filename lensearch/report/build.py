"""Assemble the report: ``report.html`` with its PNG figures beside it, and the same content as ``report.md``.

:func:`build_report` reads the searches (:mod:`lensearch.report.collect`), and for each writes: the leaderboard
per architecture (the best trial of each model, with the bicubic and noise-ceiling rows; test-split scores of the
best checkpoints when a data file is given), learning curves of the top trials, where early stopping cut trials,
best value against compute spent, parameter importance and effects (:mod:`lensearch.report.importance`), the
Pareto front of a multi-objective search, and — when the data file is at hand — image panels, azimuthal profiles,
residual power spectra and the physics table (:mod:`lensearch.report.physics`) of every architecture's best
checkpoint, with SSIM in both conventions (:mod:`lensearch.report.conventions`); then the ``lensearch downstream``
runs that scored exports of the searches' trials (:mod:`lensearch.report.downstream`). Every sentence that states a
number is generated from those data.
"""

from __future__ import annotations

import html
import math
import os
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from lensearch.errors import UserError, expect
from lensearch.report import figures
from lensearch.report.collect import SearchData, TrialData, collect
from lensearch.report.conventions import SSIM_CONVENTIONS
from lensearch.report.downstream import downstream_section
from lensearch.report.importance import effects, findings, importances
from lensearch.staging import staged_folder

__all__ = ["build_report"]

TOP_CURVES = 6          # trials in the learning-curve figure
PANEL_IMAGES = 2        # example images with panels
FEW_TRIALS = 10         # below this many trials, importance is flagged as indicative
FULL_BUDGET = ("completed", "hit its time limit")


# ------------------------------------------------------------------------------------------ document
class Doc:
    """The report as blocks, rendered both to Markdown and to HTML (one content, two formats)."""

    def __init__(self):
        self.blocks: list[tuple] = []
        self.figures: list[str] = []

    def h(self, level: int, text: str) -> None:
        self.blocks.append(("h", level, text))

    def p(self, text: str) -> None:
        self.blocks.append(("p", text))

    def ul(self, items: list[str]) -> None:
        if items:
            self.blocks.append(("ul", list(items)))

    def table(self, head: list[str], rows: list[list[Any]]) -> None:
        self.blocks.append(("table", head, [[_cell(v) for v in r] for r in rows]))

    def img(self, path: Path, caption: str) -> None:
        self.figures.append(path.name)
        self.blocks.append(("img", path.name, caption))

    def markdown(self) -> str:
        out = []
        for b in self.blocks:
            if b[0] == "h":
                out.append("#" * b[1] + " " + b[2])
            elif b[0] == "p":
                out.append(b[1])
            elif b[0] == "ul":
                out.append("\n".join(f"- {x}" for x in b[1]))
            elif b[0] == "table":
                out.append("\n".join(["| " + " | ".join(h.replace("|", "/") for h in b[1]) + " |",
                                      "|" + "---|" * len(b[1])]
                                     + ["| " + " | ".join(r) + " |" for r in b[2]]))
            elif b[0] == "img":
                out.append(f"![{b[2]}]({b[1]})\n\n*{b[2]}*")
        return "\n\n".join(out) + "\n"

    def html(self, title: str) -> str:
        e = html.escape
        out = [f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{e(title)}</title><style>"
               "body{font-family:sans-serif;max-width:1100px;margin:auto;padding:1em}"
               "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px;"
               "text-align:right}th{background:#eee}figure{margin:1em 0}img{max-width:100%}"
               "figcaption{font-size:13px;color:#444}</style></head><body>"]
        for b in self.blocks:
            if b[0] == "h":
                out.append(f"<h{b[1]}>{e(b[2])}</h{b[1]}>")
            elif b[0] == "p":
                out.append(f"<p>{e(b[1])}</p>")
            elif b[0] == "ul":
                out.append("<ul>" + "".join(f"<li>{e(x)}</li>" for x in b[1]) + "</ul>")
            elif b[0] == "table":
                out.append("<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in b[1]) + "</tr>"
                           + "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in b[2])
                           + "</table>")
            elif b[0] == "img":
                out.append(f"<figure><img src='{e(b[1])}' alt='{e(b[2])}'><figcaption>{e(b[2])}</figcaption>"
                           f"</figure>")
        out.append("</body></html>")
        return "\n".join(out) + "\n"


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
            return f"{value:.3e}"
        return f"{value:.4f}"
    return str(value).replace("|", "/")


def _pct(value: float | None) -> str | None:
    return None if value is None or not math.isfinite(value) else f"{100 * value:.1f} %"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "x"


# ------------------------------------------------------------------------------------------ helpers
def _sorted_trials(s: SearchData) -> list[TrialData]:
    metric, mode = s.primary
    return sorted(s.scored(), key=lambda t: t.best[metric], reverse=mode == "max")


def best_per_model(s: SearchData) -> list[TrialData]:
    """The best trial of each architecture (by the primary objective at its best epoch), best first."""
    seen: dict[str, TrialData] = {}
    for t in _sorted_trials(s):
        seen.setdefault(t.model, t)
    return list(seen.values())


def pareto(s: SearchData) -> list[TrialData]:
    """Trials on the front of all objectives among those that used their full budget: the search's own front,
    :func:`lensearch.search.results.pareto_rows` (its tie rule: trials equal on every objective all stay)."""
    from lensearch.search.results import pareto_rows  # (imports Ray: only when a report has a front to draw)

    return pareto_rows(s.scored(), s.objectives)


def _gap(value: float | None, ref: dict[str, float], key: str) -> float | None:
    bic, top = ref.get(f"bicubic_{key}"), ref.get(f"noise_ceiling_{key}")
    if value is None or bic is None or top is None or top == bic:
        return None
    return (value - bic) / (top - bic)


def _start_order(trials: list[TrialData]) -> list[TrialData]:
    return sorted(trials, key=lambda t: (t.start_time or 0, t.trial_id))


# ------------------------------------------------------------------------------------------ images
def _load_model(path: Path):
    import torch

    from lensearch.data.transforms import build_normalization
    from lensearch.export import RawImageSR, load_network

    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:
        raise UserError(f"{path}: unreadable checkpoint ({type(err).__name__}: {err})") from None
    return RawImageSR(load_network(ckpt), build_normalization(ckpt["normalization"])).eval()


def score_images(models: dict[str, Any], data: Path, split: str, batch_size: int = 16) -> dict[str, Any]:
    """Every method (``bicubic`` and each model) on ``split``: per-image PSNR/SSIM (both conventions)/MSE and
    physics measures, the mean residual power ratio, and the first :data:`PANEL_IMAGES` images for panels."""
    import torch

    from lensearch.data.baseline import upsample
    from lensearch.data.store import iter_batches, open_h5
    from lensearch.metrics import evaluate
    from lensearch.report.conventions import ssim_both
    from lensearch.report.physics import physics_measures, residual_power_spectrum

    info = open_h5(data)
    per: dict[str, dict[str, list[float]]] = {}
    ratios: dict[str, list[np.ndarray]] = {}
    examples: list[dict[str, np.ndarray]] = []
    freq = None
    with torch.no_grad():
        for batch in iter_batches(data, split, batch_size, ("lr", "hr")):
            lr = torch.from_numpy(batch["lr"]).float()
            hr = torch.from_numpy(batch["hr"]).float()
            outs = {"bicubic": upsample(lr, info.hr_shape)}
            for name, model in models.items():
                outs[name] = model(lr).float()
            for name, sr in outs.items():
                m = evaluate(sr, hr)
                m["ssim_skimage"] = ssim_both(sr, hr)["ssim_skimage"]
                rec = per.setdefault(name, {})
                for k, v in m.items():
                    rec.setdefault(k, []).extend(float(x) for x in v)
                for i in range(hr.shape[0]):
                    a, b = sr[i, 0].double().numpy(), hr[i, 0].double().numpy()
                    for k, v in physics_measures(a, b).items():
                        rec.setdefault(k, []).append(v)
                    spec = residual_power_spectrum(a, b)
                    freq = spec["frequency"]
                    ratios.setdefault(name, []).append(spec["ratio"])
            for i in range(hr.shape[0]):
                if len(examples) < PANEL_IMAGES:
                    examples.append({"LR": lr[i, 0].numpy(), "HR": hr[i, 0].numpy(),
                                     **{n: o[i, 0].numpy() for n, o in outs.items()}})
    expect(per, f"{data}: split '{split}' is empty; nothing to score")
    return {"n": len(per["bicubic"]["psnr"]), "metrics": per, "frequency": freq,
            "ratio": {n: np.nanmean(np.stack(r), axis=0) for n, r in ratios.items()}, "examples": examples}


def _nanmean(values: list[float]) -> float:
    a = np.asarray(values, dtype=float)
    return float(np.nanmean(a)) if np.isfinite(a).any() else float("nan")


# ------------------------------------------------------------------------------------------ one search
def _search_section(doc: Doc, s: SearchData, out: Path, data: Path | None, idx: int,
                    log: Callable[[str], None]) -> dict[str, Any]:
    metric, mode = s.primary
    tag = f"s{idx}_{_slug(s.name)}"
    ref = s.reference
    scored = _sorted_trials(s)
    result: dict[str, Any] = {"name": s.name, "dir": s.location, "parent_run_id": s.parent_run_id}
    states: dict[str, int] = {}
    for t in s.trials:
        k = figures.state_kind(t.state)
        states[k] = states.get(k, 0) + 1
    doc.h(2, f"Search '{s.name}'")
    doc.p(f"{len(s.trials)} trials ({', '.join(f'{n} {k}' for k, n in states.items())}); objective"
          f"{'s' if len(s.objectives) > 1 else ''}: {', '.join(f'{m} ({d})' for m, d in s.objectives)}; "
          f"{'stored at' if s.uri else 'directory'} {s.location}; MLflow parent run {s.parent_run_id} at "
          f"{s.tracking_uri}.")

    # ---- leaderboard per architecture
    best = best_per_model(s)
    test: dict[str, Any] | None = None
    if data is not None and best:
        models = {}
        for t in best:
            if t.checkpoint is not None:
                models[t.model] = _load_model(t.checkpoint)
        log(f"scoring {len(models)} best checkpoint(s) and bicubic on the test split of {data.name}")
        test = score_images(models, data, "test")
    head = ["model", "trial", "state", "best epoch", "epochs run", "steps", "val_psnr", "val_ssim", "val_mse",
            "gap closed", "params", "flops", "latency_ms"]
    auc = any("val_downstream_auc" in t.best for t in best)  # a search that scored the science too
    if auc:
        head.append("val_downstream_auc")
    if test:
        head += ["test_psnr", "test_ssim", "test_ssim_skimage", "test_mse"]
    rows, board = [], []
    for t in best:
        gap = t.best.get("val_gap_closed", _gap(t.best.get("val_psnr"), ref, "val_psnr"))
        row = [t.model, t.trial_id, t.state, int(t.best["epoch"]), t.epochs,
               int(t.best["steps"]) if "steps" in t.best else None, t.best.get("val_psnr"), t.best.get("val_ssim"),
               t.best.get("val_mse"), _pct(gap), int(t.cost["params"]) if "params" in t.cost else None,
               int(t.cost["flops"]) if "flops" in t.cost else None, t.cost.get("latency_ms")]
        entry = {"model": t.model, "trial": t.trial_id, "run_id": t.run_id, **{k: t.best.get(k) for k in
                 ("val_psnr", "val_ssim", "val_mse", "epoch", "steps")}, "gap_closed": gap, **t.cost}
        if auc:
            row.append(t.best.get("val_downstream_auc"))
            entry["val_downstream_auc"] = t.best.get("val_downstream_auc")
        if test:
            m = test["metrics"].get(t.model)
            vals = [_nanmean(m[k]) if m else None for k in ("psnr", "ssim", "ssim_skimage", "mse")]
            row += vals
            entry.update(dict(zip(("test_psnr", "test_ssim", "test_ssim_skimage", "test_mse"), vals)))
        rows.append(row)
        board.append(entry)
    for who in ("bicubic", "noise_ceiling"):
        row = [who.replace("_", " "), "-", "reference", None, None, None, ref.get(f"{who}_val_psnr"),
               ref.get(f"{who}_val_ssim"), ref.get(f"{who}_val_mse"),
               "0.0 %" if who == "bicubic" else "100.0 %", None, None,
               None]
        if auc:  # the frozen classifier on bicubic images, and on HR images in the ceiling row
            row.append(ref.get("bicubic_val_downstream_auc" if who == "bicubic" else "hr_val_downstream_auc"))
        if test:
            m = test["metrics"].get(who)
            row += [_nanmean(m[k]) for k in ("psnr", "ssim", "ssim_skimage", "mse")] if m else [None] * 4
        rows.append(row)
    doc.h(3, "Leaderboard per architecture")
    doc.p(f"The best trial of each model by {metric} ({mode}) at its best epoch (values as logged in MLflow). "
          f"'gap closed' is the share of the bicubic -> noise-ceiling {metric} gap. "
          + ("The noise ceiling (noise-free HR scored against noisy HR) is not available for this data. "
             if "noise_ceiling_val_psnr" not in ref else "")
          + (f"Test columns: the best checkpoints and bicubic scored on the {test['n']} test images of {data}; "
             f"the noise ceiling needs the HR noise-free images and is scored on val only. " if test else
             "Pass --data FILE.h5 to score the best checkpoints on the test split. ")
          + f"{SSIM_CONVENTIONS['ssim']} = val_ssim/test_ssim; {SSIM_CONVENTIONS['ssim_skimage']} = "
            f"test_ssim_skimage."
          + (" val_downstream_auc: the search's frozen HR-trained classifier scored on each model's SR val images; "
             "the bicubic row holds its AUC on bicubic images, the noise-ceiling row its AUC on HR." if auc else ""))
    doc.table(head, rows)
    result["leaderboard"] = board
    result["reference"] = ref

    # ---- learning curves, early stopping, compute
    if scored:
        path = figures.learning_curves(scored[:TOP_CURVES], metric, ref, out / f"{tag}_curves.png")
        doc.img(path, f"{metric} per report of the top {min(TOP_CURVES, len(scored))} trials; dotted: bicubic, "
                      f"dashed: noise ceiling")
        if any(t.history.get("steps") for t in scored):
            path = figures.learning_curves(scored[:TOP_CURVES], metric, ref, out / f"{tag}_curves_steps.png",
                                           x="steps")
            doc.img(path, f"the same curves against optimizer steps")
        cut = [t for t in s.trials if figures.state_kind(t.state) != "completed" and t.epochs]
        path = figures.trial_lengths(s.trials, s.max_epochs, metric, out / f"{tag}_stopping.png")
        doc.img(path, f"where trials ended: {len(cut)} of {len(s.trials)} trials ended before the "
                      f"{s.max_epochs if s.max_epochs else '?'}-epoch budget (x: not completed; o: completed)")
        spent, best_so_far, pts = 0.0, None, []
        for t in _start_order(s.trials):
            seconds = t.last("train_seconds")
            if seconds is None:
                continue
            spent += seconds
            value = t.best.get(metric)
            if value is not None and (best_so_far is None or (value > best_so_far if mode == "max"
                                                               else value < best_so_far)):
                best_so_far = value
            if best_so_far is not None:
                pts.append((spent, best_so_far))
        if pts:
            path = figures.compute_curve(pts, metric, ref, out / f"{tag}_compute.png")
            doc.img(path, f"best {metric} so far against cumulative training seconds ({pts[-1][0]:.1f} s in all)")
            result["compute_seconds"] = pts[-1][0]

    # ---- importance and effects
    pts_all = [(t.params, t.best[metric]) for t in scored]
    full = [(t.params, t.best[metric]) for t in scored if t.state.startswith(FULL_BUDGET)]
    use, which = (full, "that used their full budget") if len(full) >= 5 else (pts_all, "with a score (early-"
                                                                                       "stopped ones at their best "
                                                                                       "epoch)")
    doc.h(3, "What mattered")
    imp = importances(use, mode)
    result["importance"] = {k: v for k, v in imp.items()}
    doc.p(f"Parameter importance from Optuna's evaluators on a study rebuilt from the {len(use)} trials {which}."
          + (f" With fewer than {FEW_TRIALS} trials the rankings and effects are indicative only."
             if len(use) < FEW_TRIALS else ""))
    names = [k for k in imp if k != "skipped"]
    if names:
        path = figures.importance_bars({k: imp[k] for k in names}, out / f"{tag}_importance.png")
        doc.img(path, f"parameter importance of {metric} ({', '.join(names)})")
        doc.ul([f"{n}: {', '.join(f'{p} {v:.2f}' for p, v in list(imp[n].items())[:3])} (top 3)" for n in names])
    doc.ul([f"{n} skipped: {why}" for n, why in imp["skipped"].items()])
    effs = effects(use)
    dists = {}
    if use:
        from lensearch.report.importance import infer_distributions

        dists = infer_distributions([p for p, _ in use])
    for eff in effs:
        log_x = bool(getattr(dists.get(eff.param), "log", False))
        path = figures.effect_plot(eff, metric, ref, out / f"{tag}_effect_{_slug(eff.param)}.png", log_x=log_x)
        if eff.values == "categorical":
            summ = eff.summary()
            text = "; ".join(f"{c}: {m:.4g} [{lo:.4g}, {hi:.4g}] (n={n})" if math.isfinite(lo)
                             else f"{c}: {m:.4g} (n={n})" for c, (m, lo, hi, n) in summ.items())
            doc.img(path, f"{eff.param}: mean {metric} per value with 95 % bootstrap CI — {text}")
        else:
            doc.img(path, f"{eff.param}: {metric} of each of {len(eff.points)} trials against its value")
    found = findings(effs, metric, mode)
    result["findings"] = list(found)

    # ---- Pareto front
    if len(s.objectives) > 1:
        (m1, _), (m2, _) = s.objectives[:2]
        front = pareto(s)
        on = {t.trial_id for t in front}
        pts = [(t.trial_id, t.best[m1], t.best[m2], t.trial_id in on) for t in s.scored()
               if m1 in t.best and m2 in t.best]
        if pts:
            path = figures.pareto_plot(pts, (m1, m2), out / f"{tag}_pareto.png")
            doc.img(path, f"Pareto front of {m1} and {m2}: {len(front)} of {len(pts)} trials (only trials that used "
                          f"their full budget can be on it)")
        result["pareto"] = sorted(on)

    # ---- images and physics
    image_file = data if data is not None else _search_data_file(s.data_path, log)
    split = "test" if data is not None else "val"
    if image_file is not None and best:
        scores = test if (test and split == "test") else None
        if scores is None:
            models = {t.model: _load_model(t.checkpoint) for t in best if t.checkpoint is not None}
            log(f"scoring {len(models)} best checkpoint(s) and bicubic on the {split} split of {image_file.name}")
            scores = score_images(models, image_file, split)
        _physics_section(doc, scores, split, image_file, out, tag, result)
    elif not best:
        doc.p(f"No trial reported {metric}: no leaderboard, image panels or physics measures.")
    else:
        doc.p("No data file at hand (pass --data FILE.h5): image panels and physics measures are left out.")

    if found or result.get("physics_findings"):
        doc.h(3, "Findings (generated from the data above)")
        doc.ul(_headline(s, best, ref) + found + result.get("physics_findings", []))
    return result


def _headline(s: SearchData, best: list[TrialData], ref: dict[str, float]) -> list[str]:
    metric, _ = s.primary
    if not best:
        return []
    top = best[0]
    key = metric.replace("val_", "")
    lines = [f"best {metric}: {top.best[metric]:.4f} ({top.model}, trial {top.trial_id}, "
             f"epoch {int(top.best['epoch'])})"]
    bic = ref.get(f"bicubic_val_{key}")
    if bic is not None:
        lines[0] += f", {top.best[metric] - bic:+.4f} over bicubic ({bic:.4f})"
    return lines


def _physics_section(doc: Doc, scores: dict[str, Any], split: str, data: Path, out: Path, tag: str,
                     result: dict[str, Any]) -> None:
    from lensearch.report.physics import fit_ring, radial_profile

    methods = list(scores["metrics"])  # bicubic first, then each model
    doc.h(3, f"Images and physics ({split} split, {scores['n']} images of {data.name})")
    for i, ex in enumerate(scores["examples"]):
        cols = [("LR", ex["LR"]), ("bicubic", ex["bicubic"])] + [(m, ex[m]) for m in methods if m != "bicubic"] \
            + [("HR", ex["HR"])]
        path = figures.image_panel(cols, ex["HR"], out / f"{tag}_panel{i}.png")
        doc.img(path, f"{split} image {i}: LR | bicubic | best model per architecture | HR; bottom: residual "
                      f"(image - HR)")
    ex = scores["examples"][0]
    ring = fit_ring(ex["HR"].astype(np.float64))
    center = ring.center if ring is not None else None
    profiles = [(m, *radial_profile(ex[m].astype(np.float64), center, 0.5)) for m in ["HR", *methods]]
    path = figures.radial_profiles(profiles, ring.radius if ring else None, ring.annulus if ring else None,
                                   out / f"{tag}_profile.png")
    doc.img(path, f"azimuthal profiles of {split} image 0 about the HR ring centre"
                  + (f" ({ring.center[0]:.2f}, {ring.center[1]:.2f}) px, ring radius {ring.radius:.2f} px"
                     if ring else " (no ring found: image centre)"))
    path = figures.power_spectra(scores["frequency"], scores["ratio"], out / f"{tag}_spectrum.png")
    doc.img(path, f"residual power relative to HR per spatial frequency, mean over {scores['n']} {split} images")
    head = ["method", f"{split}_psnr", f"{split}_ssim (Gaussian 11/1.5)", f"{split}_ssim (skimage 7x7)",
            "flux error", "flux error, abs", "ring radius error (px)", "ring radius error, abs (px)",
            "ring centre error (px)", "ring residual", "images with a ring"]
    rows, table = [], {}
    for m in methods:
        v = scores["metrics"][m]
        vals = {"psnr": _nanmean(v["psnr"]), "ssim": _nanmean(v["ssim"]),
                "ssim_skimage": _nanmean(v["ssim_skimage"]),
                "flux_error": _nanmean(v["flux_error"]), "abs_flux_error": _nanmean(np.abs(v["flux_error"])),
                "ring_radius_error": _nanmean(v["ring_radius_error"]),
                "abs_ring_radius_error": _nanmean(np.abs(v["ring_radius_error"])),
                "ring_center_error": _nanmean(v["ring_center_error"]), "ring_residual": _nanmean(v["ring_residual"]),
                "rings": int(np.isfinite(np.asarray(v["ring_radius_error"], float)).sum())}
        table[m] = vals
        rows.append([m, *vals.values()])
    doc.p("Physics measures (definitions: docs/report.md; lensearch/report/physics.py), means over the images; "
          "ring measures over the images where both SR and HR show a ring peak. Both SSIM conventions on the same "
          "unit-scaled images.")
    doc.table(head, rows)
    result["physics"] = table
    lines = []
    for key, label in (("abs_flux_error", "mean |flux error|"), ("abs_ring_radius_error", "mean |ring radius error|"),
                       ("ring_residual", "ring residual")):
        ok = {m: t[key] for m, t in table.items() if math.isfinite(t[key])}
        if len(ok) >= 2:
            win = min(ok, key=ok.get)
            lines.append(f"{label}: lowest for {win} ({ok[win]:.4g})"
                         + ("; no model does better than bicubic" if win == "bicubic"
                            else f"; bicubic {ok.get('bicubic', float('nan')):.4g}"))
    freq = scores["frequency"]
    for m, ratio in scores["ratio"].items():
        if m != "bicubic" and np.isfinite(ratio).any():
            above = freq[np.isfinite(ratio) & (ratio >= 1.0)]
            k = int(np.nanargmax(ratio))
            lines.append(f"{m}: residual power peaks at {freq[k]:.3f} cycles/px ({ratio[k]:.3g} x HR's)"
                         + (f"; at or above HR's power from {above.min():.3f} cycles/px" if above.size else
                            "; below HR's power at every frequency"))
    result["physics_findings"] = lines


# ------------------------------------------------------------------------------------------ the folder
def _check_out(out: Path, overwrite: bool) -> None:
    """``out`` may exist only empty, or as an earlier report with ``overwrite`` (it is replaced at the end)."""
    expect(not out.exists() or out.is_dir(), f"--out {out}: exists and is not a directory")
    if out.exists() and any(out.iterdir()):
        expect(overwrite and (out / "report.html").is_file(),
               f"--out {out}: exists and is not empty" + ("" if overwrite else
                                                         " (use --overwrite to replace an earlier report)")
               + (" and holds no report.html (--overwrite replaces only an earlier report)" if overwrite else ""))


def _local_data(data: str | os.PathLike) -> Path:
    """``--data`` as a local file: a path as given, a storage URI (``s3://...``) downloaded once into the cache."""
    from lensearch.storage import fetch, is_uri

    return fetch(str(data), "data") if is_uri(str(data)) else Path(data).resolve()


def _search_data_file(path: str | None, log: Callable[[str], None]) -> Path | None:
    """The search's own data file when it is still at hand: a path that exists, or a URI that can be fetched."""
    if not path:
        return None
    from lensearch.storage import is_uri

    if not is_uri(path):
        return Path(path) if Path(path).is_file() else None
    try:
        return _local_data(path)
    except (UserError, OSError) as err:  # gone from the store, no access from here: the report goes on without them
        log(f"the search's data file is not at hand ({err}); image panels and physics are left out")
        return None


def build_report(searches: list[str], out: str | os.PathLike, *, store: str | os.PathLike = "mlruns",
                 tracking_uri: str | None = None, data: str | os.PathLike | None = None, overwrite: bool = False,
                 log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Write the report of ``searches`` into ``out`` (``report.html``, ``report.md``, PNG figures); returns a
    summary (per search: leaderboard, importance, findings, physics) that is also what the documents state."""
    import json

    log = log or (lambda text: print(f"lensearch report: {text}", file=sys.stderr, flush=True))
    if data is not None:
        from lensearch.data.store import open_h5

        data = _local_data(data)
        expect(data.is_file(), f"--data {data}: no such file")
        info = open_h5(data)
        expect(info.splits.get("test"), f"--data {data}: the test split is empty; nothing to score")
    found = collect(list(searches), store, tracking_uri)
    out = Path(out).resolve()
    _check_out(out, overwrite)
    with staged_folder(out) as tmp:
        doc = Doc()
        title = "lensearch report: " + ", ".join(s.name for s in found)
        doc.h(1, title)
        doc.p(f"Generated {time.strftime('%Y-%m-%d %H:%M:%S')} from {len(found)} search(es). Every number below "
              f"is read from MLflow or computed from the checkpoints and data; PSNR/SSIM/MSE follow the project's "
              f"convention (reference HR min-max scaled to [0, 1], data_range 1).")
        summary = {"searches": []}
        for i, s in enumerate(found):
            summary["searches"].append(_search_section(doc, s, tmp, Path(data) if data else None, i, log))
        summary["downstream"] = downstream_section(doc, found)  # lensearch downstream runs of these trials
        (tmp / "report.md").write_text(doc.markdown())
        (tmp / "report.html").write_text(doc.html(title))
        summary["figures"] = list(doc.figures)
        (tmp / "report.json").write_text(json.dumps(summary, indent=1, default=_jsonable))
    summary["out"] = str(out)
    return summary


def _jsonable(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)
