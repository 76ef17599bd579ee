"""The report's "Downstream science" section: the ``lensearch downstream`` runs that scored the reported
searches' trials.

``lensearch downstream DATA.h5 --sr EXPORT ...`` logs one MLflow run in the experiment ``downstream`` of the
tracking store it uses (:mod:`lensearch.downstream.run`; this module reads what it logs and does not import it):

* tags ``lensearch.kind = downstream``, ``lensearch.data``, ``lensearch.tasks`` (comma-separated task names) and,
  per SR export ``<name>`` (the export folder's name), ``lensearch.sr.<name>.path`` and, when the export's
  manifest records them, ``lensearch.sr.<name>.trial_run_id`` (the MLflow run of the search trial it was exported
  from) and ``lensearch.sr.<name>.export_run_id``;
* parameters ``epochs``, ``bootstrap`` (resamples B), ``seed``, ``ci_level``, ``data``, ``sr``, ...;
* metrics ``<task>/<version>/<metric>`` with ``_lo`` / ``_hi`` (percentile bootstrap interval over test images),
  versions ``HR``, ``bicubic``, ``SR_<name>`` (``SR:<name>`` with ``:`` made ``_``) and ``LR-trained``; and for
  each SR version the paired comparisons ``<metric>_vs_bicubic`` (SR − bicubic) and ``<metric>_recovered``
  ((SR − bicubic) / (HR − bicubic)), each with ``_lo`` / ``_hi`` from the same bootstrap draws of the images.

A downstream run belongs in the report when one of its ``trial_run_id`` tags names a trial run of a reported
search. The section shows, per run and task, each version's metrics with their intervals (LR-trained, bicubic,
SR, HR side by side) and finding lines computed from the numbers (:func:`finding_lines`).
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["DownstreamRun", "EXPERIMENT", "downstream_section", "find_downstream", "finding_lines", "how_to_make_one"]

EXPERIMENT = "downstream"  # lensearch.downstream.run.EXPERIMENT
HR, BICUBIC, LR_TRAINED = "HR", "bicubic", "LR-trained"  # lensearch.downstream.variants
TITLES = {"classify": "substructure classification", "find": "lens finding", "regress": "lens parameter regression"}
CLASSIFICATION_COLUMNS = ("accuracy", "precision_macro", "recall_macro", "f1_macro", "auc_macro")
REGRESSION_COLUMNS = {"MAE": "mae", "RMSE": "rmse", "bias (pred - true)": "bias"}
# the metrics the findings speak about: higher is better for a classification's, lower for a regression's
HEADLINE = {"classification": (("auc_macro", "max"), ("accuracy", "max")), "regression": (("rmse", "min"),)}
COMPARISONS = ("vs_bicubic", "recovered")
_SR_TAG = re.compile(r"^lensearch\.sr\.(.+)\.(path|trial_run_id|export_run_id)$")


@dataclass
class Task:
    """One task of a downstream run: ``versions[label][metric] = (value, lo, hi)`` (NaN where not logged) and
    ``comparisons[sr_label][metric][which] = (value, lo, hi)``."""

    name: str
    problem: str
    versions: dict[str, dict[str, tuple[float, float, float]]]
    comparisons: dict[str, dict[str, dict[str, tuple[float, float, float]]]] = field(default_factory=dict)
    targets: list[str] = field(default_factory=list)

    @property
    def title(self) -> str:
        return TITLES.get(self.name, self.name)


@dataclass
class DownstreamRun:
    """One ``lensearch downstream`` run and what its SR versions were: ``sources[sr_label]`` = the search, trial
    and model it came from (None for an export of something not reported)."""

    run_id: str
    start_time: int
    data: str
    params: dict[str, str]
    tracking_uri: str
    sources: dict[str, dict[str, Any] | None]
    tasks: dict[str, Task]

    def order(self, task: Task) -> list[str]:
        """Versions side by side, worst-expected first: LR-trained, bicubic, each SR, HR."""
        srs = [v for v in task.versions if v.startswith("SR:")]
        return [v for v in (LR_TRAINED, BICUBIC, *srs, HR) if v in task.versions]


def _triple(metrics: dict[str, float], key: str) -> tuple[float, float, float]:
    return tuple(float(metrics.get(key + s, float("nan"))) for s in ("", "_lo", "_hi"))


def _parse(run, trials: dict[str, dict[str, Any]], tracking_uri: str) -> DownstreamRun:
    tags, metrics = run.data.tags, run.data.metrics
    names: dict[str, dict[str, str]] = {}
    for key, value in tags.items():
        m = _SR_TAG.match(key)
        if m:
            names.setdefault(m.group(1), {})[m.group(2)] = value
    labels = {f"SR_{n}": f"SR:{n}" for n in names}  # metric keys carry SR_<name> for version SR:<name>
    sources = {f"SR:{n}": trials.get(v.get("trial_run_id", "")) for n, v in names.items()}
    grouped: dict[str, dict[str, set[str]]] = {}
    for key in metrics:
        parts = key.split("/", 2)
        if len(parts) != 3:
            continue
        task, version, metric = parts
        base = metric[:-3] if metric.endswith(("_lo", "_hi")) else metric
        grouped.setdefault(task, {}).setdefault(labels.get(version, version), set()).add(base)
    order = [t for t in tags.get("lensearch.tasks", "").split(",") if t in grouped]
    order += [t for t in grouped if t not in order]
    tasks = {}
    for name in order:
        versions, comparisons = {}, {}
        for label, bases in grouped[name].items():
            version = next(k for k, v in labels.items() if v == label) if label in labels.values() else label
            prefix = f"{name}/{version}/"
            plain = sorted(b for b in bases if not b.endswith(tuple(f"_{c}" for c in COMPARISONS)))
            versions[label] = {b: _triple(metrics, prefix + b) for b in plain}
            for b in plain:
                pair = {c: _triple(metrics, f"{prefix}{b}_{c}") for c in COMPARISONS if f"{b}_{c}" in bases}
                if pair:
                    comparisons.setdefault(label, {})[b] = pair
        every = set().union(*(set(v) for v in versions.values()))
        problem = "classification" if "accuracy" in every else "regression"
        from lensearch.data.tasks import REGRESSION_TARGETS

        found = {b[len("rmse_"):] for b in every if b.startswith("rmse_")}
        targets = [t for t in REGRESSION_TARGETS if t in found] + sorted(found - set(REGRESSION_TARGETS))
        tasks[name] = Task(name, problem, versions, comparisons, targets)
    return DownstreamRun(run.info.run_id, int(run.info.start_time or 0), tags.get("lensearch.data", "?"),
                         dict(run.data.params), tracking_uri, sources, tasks)


def find_downstream(searches: list) -> tuple[list[DownstreamRun], list[str]]:
    """The downstream runs (newest first) whose SR exports came from trials of ``searches``
    (:class:`lensearch.report.collect.SearchData`), looked up in each search's tracking store; and the tracking
    URIs that were searched."""
    from mlflow.tracking import MlflowClient

    by_uri: dict[str, dict[str, dict[str, Any]]] = {}
    for s in searches:
        trials = by_uri.setdefault(s.tracking_uri, {})
        for t in s.trials:
            trials[t.run_id] = {"search": s.name, "trial": t.trial_id, "model": t.model}
    out = []
    for uri, trials in by_uri.items():
        client = MlflowClient(tracking_uri=uri)
        exp = client.get_experiment_by_name(EXPERIMENT)
        if exp is None:
            continue
        runs = client.search_runs([exp.experiment_id], "tags.`lensearch.kind` = 'downstream'", max_results=5000,
                                  order_by=["attributes.start_time DESC"])
        for run in runs:
            used = {v for k, v in run.data.tags.items() if _SR_TAG.match(k) and k.endswith(".trial_run_id")}
            if used & set(trials):
                out.append(_parse(run, trials, uri))
    out.sort(key=lambda r: -r.start_time)
    return out, list(by_uri)


def how_to_make_one(searches: list) -> str:
    """The commands that make a downstream run this report would find, for the first search given."""
    import shlex

    s = searches[0]
    data = s.data_path or "DATA.h5"
    export = f"{s.name}-export"
    store = Path(s.dir).parent.parent if Path(s.dir).parent.name == "searches" and not s.uri else None
    where = (["--store", str(store)] if store is not None and s.tracking_uri == f"sqlite:///{store / 'mlflow.db'}"
             else ["--tracking-uri", s.tracking_uri])  # the search's own MLflow store, where this report looks
    words = ["lensearch", "export", s.location, "--out", export, *where]
    words2 = ["lensearch", "downstream", str(data), "--sr", export, "--out", f"{s.name}-downstream", *where]
    return " ".join(map(shlex.quote, words)) + " && " + " ".join(map(shlex.quote, words2))


# ------------------------------------------------------------------------------------------ findings
def _fmt(x: float) -> str:
    if not math.isfinite(x):
        return "nan"
    return f"{x:.3f}" if abs(x) >= 0.01 or x == 0 else f"{x:.2e}"


def _ci(t: tuple[float, float, float], pct: bool = False) -> str:
    value, lo, hi = t
    f = (lambda x: f"{100 * x:.0f} %" if math.isfinite(x) else "nan") if pct else _fmt
    return f(value) + (f" [{f(lo)}, {f(hi)}]" if math.isfinite(lo) and math.isfinite(hi) else "")


def cell(t: tuple[float, float, float]) -> str:
    """A table cell: value [lo, hi]."""
    return _ci(t)


def finding_lines(run: DownstreamRun, task: Task) -> list[str]:
    """One line per SR version and headline metric (classification: AUC and accuracy, higher is better;
    regression: RMSE of each target, lower is better), every word decided by the numbers:

    * SR against bicubic: "better" / "worse" when the paired 95 % interval of SR − bicubic excludes 0,
      "not distinguishable" otherwise; without paired intervals (an older run), by whether the two versions'
      own intervals are disjoint;
    * the share of the bicubic -> HR difference SR recovers, with its paired interval (when HR and bicubic
      differ), and where the LR-trained network stands.
    """
    lines = []
    srs = [v for v in task.versions if v.startswith("SR:")]
    if task.problem == "classification":
        metrics = list(HEADLINE["classification"])
    else:
        metrics = [(f"{m}_{t}", mode) for t in task.targets for m, mode in HEADLINE["regression"]]
    for sr in srs:
        for metric, mode in metrics:
            sr_v = task.versions[sr].get(metric)
            bic = task.versions.get(BICUBIC, {}).get(metric)
            hr = task.versions.get(HR, {}).get(metric)
            if sr_v is None or bic is None or not (math.isfinite(sr_v[0]) and math.isfinite(bic[0])):
                continue
            sign = 1.0 if mode == "max" else -1.0
            better_word, worse_word = ("higher", "lower") if mode == "max" else ("lower", "higher")
            pair = task.comparisons.get(sr, {}).get(metric, {})
            diff = pair.get("vs_bicubic")
            if diff is not None and math.isfinite(diff[1]):
                lo, hi = diff[1], diff[2]
                if sign * lo > 0 and sign * hi > 0:  # the whole interval on the better side of 0
                    verdict = f"beats bicubic ({better_word} is better)"
                elif sign * lo < 0 and sign * hi < 0:
                    verdict = "is worse than bicubic"
                else:
                    verdict = "is not distinguishable from bicubic"
                text = (f"{task.name}, {metric}: {sr} {_ci(sr_v)} {verdict}: SR − bicubic {diff[0]:+.3f} "
                        f"[{lo:+.3f}, {hi:+.3f}] (paired 95 % bootstrap interval)")
            else:
                disjoint = math.isfinite(sr_v[1]) and math.isfinite(bic[1]) and (sr_v[1] > bic[2] or sr_v[2] < bic[1])
                if disjoint and sign * (sr_v[0] - bic[0]) > 0:
                    verdict = f"beats bicubic ({better_word} is better; the two 95 % intervals are disjoint)"
                elif disjoint:
                    verdict = "is worse than bicubic (the two 95 % intervals are disjoint)"
                else:
                    verdict = "is not distinguishable from bicubic (overlapping or missing 95 % intervals)"
                text = f"{task.name}, {metric}: {sr} {_ci(sr_v)} {verdict}; bicubic {_ci(bic)}"
            if hr is not None and math.isfinite(hr[0]):
                span = hr[0] - bic[0]
                rec = pair.get("recovered")
                if sign * span > 0:
                    share = rec if rec is not None else ((sr_v[0] - bic[0]) / span, float("nan"), float("nan"))
                    text += (f"; it recovers {_ci(share, pct=True)} of the bicubic -> HR difference "
                             f"(bicubic {_fmt(bic[0])}, HR {_fmt(hr[0])})")
                else:
                    text += (f"; HR ({_fmt(hr[0])}) is not {better_word} than bicubic ({_fmt(bic[0])}) here, so "
                             f"there is no bicubic -> HR difference to recover")
            lr = task.versions.get(LR_TRAINED, {}).get(metric)
            if lr is not None and math.isfinite(lr[0]):
                side = ("equal" if sr_v[0] == lr[0] else better_word if sign * (sr_v[0] - lr[0]) > 0
                        else worse_word)
                text += f"; the LR-trained network scores {_fmt(lr[0])} (SR {side})"
            lines.append(text)
    return lines


# ------------------------------------------------------------------------------------------ the section
def downstream_section(doc, searches: list) -> dict[str, Any]:
    """Append "Downstream science" to ``doc`` (:class:`lensearch.report.build.Doc`); returns what it states."""

    runs, uris = find_downstream(searches)
    doc.h(2, "Downstream science")
    if not runs:
        command = how_to_make_one(searches)
        doc.p(f"No lensearch downstream run in the MLflow experiment '{EXPERIMENT}' ({', '.join(uris)}) scored an "
              f"export of a trial of {'this search' if len(searches) == 1 else 'these searches'}. To make one, export "
              f"a trial and score it on the science tasks (then run this report again): {command}")
        return {"runs": [], "how_to": command}
    doc.p(f"{len(runs)} lensearch downstream run(s) in the MLflow experiment '{EXPERIMENT}' scored exports of "
          f"trials of the searches above. Each trains small CNNs on the HR training images of its data file and "
          f"scores them on the test images as LR-trained (the same network trained on bicubically upsampled LR "
          f"images, scored on bicubic test images), bicubic, SR (LR through each export) and HR. Values: "
          f"[95 % percentile bootstrap interval over test images]; the findings use paired intervals (the same "
          f"bootstrap draws of the images for every version).")
    out = []
    for run in runs:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(run.start_time / 1000))
        p = run.params
        doc.h(3, f"Downstream run {run.run_id[:8]} on {Path(run.data).name} ({when})")
        srcs = [f"{label} = trial {src['trial']} ({src['model']}) of search '{src['search']}'" if src else
                f"{label} = an export of no reported trial" for label, src in run.sources.items()]
        doc.p(f"MLflow run {run.run_id} at {run.tracking_uri}; data {run.data}; {p.get('epochs', '?')} epochs, "
              f"B = {p.get('bootstrap', '?')} bootstrap resamples, seed {p.get('seed', '?')}. "
              + "; ".join(srcs) + ".")
        entry = {"run_id": run.run_id, "data": run.data, "sources": run.sources, "tasks": {}}
        for task in run.tasks.values():
            versions = run.order(task)
            doc.h(4, f"{task.title} ({task.name})")
            tables = ([("", {c: c for c in CLASSIFICATION_COLUMNS})] if task.problem == "classification" else
                      [(t, {h: f"{m}_{t}" for h, m in REGRESSION_COLUMNS.items()}) for t in task.targets])
            for target, columns in tables:
                if target:
                    doc.p(f"{target}:")
                doc.table(["version", *columns],
                          [[v, *(cell(task.versions[v].get(k, (float("nan"),) * 3)) for k in columns.values())]
                           for v in versions])
            found = finding_lines(run, task)
            doc.ul(found)
            entry["tasks"][task.name] = {"problem": task.problem, "versions": {v: task.versions[v] for v in versions},
                                         "comparisons": task.comparisons, "findings": found}
        out.append(entry)
    return {"runs": out}
