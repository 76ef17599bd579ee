"""``lensearch downstream``: train, score, tabulate, plot and log (see :mod:`lensearch.downstream`).

Writes into ``--out``: ``downstream.json`` (every number, and each SR version against bicubic and HR on paired
bootstrap draws: ``comparisons``), ``downstream.md`` (one table per task: rows HR /
bicubic / SR:<name> / LR-trained, metric columns with 95 % bootstrap intervals), PNG figures and
``feature_net.pt`` (the HR substructure classifier in :func:`lensearch.models.feature_net.save_feature_net`
form). Everything is logged to one MLflow run in the experiment ``downstream``.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lensearch import __version__
from lensearch.downstream import figures
from lensearch.downstream.bootstrap import draw, intervals, paired_comparison
from lensearch.downstream.metrics import classification_metrics, confusion_matrix, regression_metrics, roc_curve
from lensearch.downstream.tasks import Task, load_data, plan_tasks
from lensearch.downstream.train import Trained, predict, train_task
from lensearch.downstream.variants import (BICUBIC, HR, LR_TRAINED, SRExport, Variant, bicubic_images, load_exports,
                                          make_variants)
from lensearch.errors import UserError, expect

__all__ = ["EXPERIMENT", "FEATURE_NET", "DownstreamOptions", "run_downstream"]

EXPERIMENT = "downstream"
FEATURE_NET = "feature_net.pt"
RESULTS, TABLE = "downstream.json", "downstream.md"
# Columns of the markdown tables (every metric is in downstream.json).
CLASSIFICATION_COLUMNS = ("accuracy", "precision_macro", "recall_macro", "f1_macro", "auc_macro")
REGRESSION_COLUMNS = {"MAE": "mae", "RMSE": "rmse", "bias (pred - true)": "bias"}


@dataclass
class DownstreamOptions:
    """What ``lensearch downstream`` was asked (see its ``--help``)."""

    data: Path
    sr: list[Path]
    out: Path
    task: str = "all"
    epochs: int = 30
    seed: int = 0
    bootstrap: int = 1000
    batch_size: int = 16
    tracking_uri: str | None = None
    store: Path = field(default_factory=lambda: Path("mlruns"))
    track: bool = True
    net_config: dict[str, Any] = field(default_factory=dict)


def _check(opts: DownstreamOptions) -> None:
    expect(opts.epochs >= 1, f"--epochs: expected a positive integer, got {opts.epochs}")
    expect(opts.bootstrap >= 0, f"--bootstrap: expected a non-negative integer, got {opts.bootstrap}")
    expect(opts.batch_size >= 2, f"--batch-size: expected at least 2, got {opts.batch_size}")
    expect(not opts.out.exists() or opts.out.is_dir(), f"--out {opts.out}: exists and is not a directory")


def run_downstream(opts: DownstreamOptions, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run every requested task; returns the results (also written as ``out/downstream.json``)."""
    log = log or (lambda text: print(f"lensearch downstream: {text}", file=sys.stderr, flush=True))
    t0 = time.perf_counter()
    _check(opts)
    data = load_data(opts.data)
    info = data.info
    tasks, notes = plan_tasks(info, opts.task)
    exports = load_exports(opts.sr, info)  # every --sr folder is checked before any training
    for note in notes:
        log(note)
    opts.out.mkdir(parents=True, exist_ok=True)
    train, val, test = data.splits["train"], data.splits.get("val"), data.splits["test"]

    log(f"{info.path.name}: {len(train)} train / {len(val) if val else 0} val / {len(test)} test images; "
        f"tasks {', '.join(t.name for t in tasks)}; SR exports: {', '.join(e.name for e in exports) or 'none'}")
    variants = make_variants(test.hr, test.lr, info.scale, exports)
    lr_up = {"train": bicubic_images(train.lr, info.scale),
             "val": bicubic_images(val.lr, info.scale) if val else None}

    results: dict[str, Any] = {
        "lensearch_version": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "data": {"path": str(info.path), "n": info.n, "hr_shape": list(info.hr_shape),
                 "lr_shape": list(info.lr_shape), "scale": info.scale, "class_names": info.class_names,
                 "splits": info.splits},
        "options": {"task": opts.task, "epochs": opts.epochs, "seed": opts.seed, "bootstrap": opts.bootstrap,
                    "ci_level": 0.95, "batch_size": opts.batch_size},
        "exports": {e.name: {"path": str(e.path), "model": e.manifest.get("model", {}).get("name"), **e.run_ids}
                    for e in exports},
        "versions": [v.name for v in variants], "notes": notes, "tasks": {}, "figures": [],
    }
    trained_hr: dict[str, Trained] = {}
    for task in tasks:
        result, hr_net, figs = _run_task(task, data, lr_up, variants, opts, log)
        results["tasks"][task.name] = result
        results["figures"] += [f.name for f in figs]
        trained_hr[task.name] = hr_net

    if "classify" in trained_hr:
        from lensearch.models.feature_net import save_feature_net

        save_feature_net(trained_hr["classify"].net, opts.out / FEATURE_NET)
        results["feature_net"] = FEATURE_NET
        log(f"wrote {opts.out / FEATURE_NET} (HR substructure classifier; use it as loss.content_weights)")
    results["seconds"] = time.perf_counter() - t0
    (opts.out / TABLE).write_text(render_table(results))
    _write_json(opts.out / RESULTS, results)
    if opts.track:
        results["mlflow"] = log_to_mlflow(opts, results, exports)
        _write_json(opts.out / RESULTS, results)
        tracked = results["mlflow"]
        log(f"MLflow: run {tracked['run_id']} in experiment '{EXPERIMENT}' ({tracked['tracking_uri']})")
    return results


def _write_json(path: Path, results: dict[str, Any]) -> None:
    """Strict JSON: undefined values (an AUC of a class without test images, say) are written as null."""
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_text(json.dumps(_finite(results), indent=1, default=_jsonable, allow_nan=False))
    os.replace(tmp, path)


def _finite(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, (float, np.floating)) and not math.isfinite(value):
        return None
    return value


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


# ------------------------------------------------------------------------------------------- one task
def _run_task(task: Task, data, lr_up: dict[str, np.ndarray | None], variants: list[Variant],
              opts: DownstreamOptions, log: Callable[[str], None]) -> tuple[dict[str, Any], Trained, list[Path]]:
    train, val, test = data.splits["train"], data.splits.get("val"), data.splits["test"]
    rows, y = task.select(train)
    expect(len(rows) >= 2, f"{data.info.path}: {task.title} needs at least 2 training images, found {len(rows)}")
    test_rows, y_test = task.select(test)
    expect(len(test_rows) >= 1, f"{data.info.path}: {task.title} has no test images")
    val_rows, y_val = task.select(val) if val is not None else (np.zeros(0, int), None)
    kw = {"epochs": opts.epochs, "seed": opts.seed, "batch_size": opts.batch_size, "net_config": opts.net_config,
          "log": log}
    nets = {}
    for trained_on, x_train, x_val in (("HR", train.hr, val.hr if val is not None else None),
                                       ("LR", lr_up["train"], lr_up["val"])):
        log(f"{task.name}: training on {len(rows)} {trained_on} images"
            + (" (bicubically upsampled to the HR size)" if trained_on == "LR" else ""))
        nets[trained_on] = train_task(task, x_train[rows], y, x_val[val_rows] if x_val is not None else None,
                                      y_val, **kw)

    versions: dict[str, Any] = {}
    predictions: dict[str, np.ndarray] = {}
    draws = {}
    for v in variants:
        pred = predict(nets[v.trained_on], v.images[test_rows])
        predictions[v.name] = pred
        versions[v.name], draws[v.name] = _score(task, pred, y_test, opts)
    # each SR version against bicubic and HR, on the same (paired) bootstrap draws of the test images
    comparisons = {v.name: paired_comparison(draws[v.name], draws[BICUBIC], draws[HR]) for v in variants
                   if v.export is not None}
    figs = _task_figures(task, y_test, predictions, versions, opts.out)
    result = {
        "problem": task.problem, "title": task.title, "n_train": int(len(rows)), "n_val": int(len(val_rows)),
        "n_test": int(len(test_rows)),
        **({"classes": task.classes, "test_class_counts": np.bincount(y_test, minlength=task.outputs).tolist()}
           if task.problem == "classification" else {"targets": task.targets}),
        "training": {k: {"best_epoch": n.best_epoch, "seconds": round(n.seconds, 2), "history": n.history}
                     for k, n in nets.items()},
        "versions": versions, "comparisons": comparisons,
    }
    return result, nets["HR"], figs


def _score(task: Task, pred: np.ndarray, y: np.ndarray, opts: DownstreamOptions) -> tuple[dict[str, Any], Any]:
    """The version's metrics with intervals (+ confusion matrix and ROC curves for a classification), and the
    bootstrap draws they came from (seeded alike for every version: paired)."""
    if task.problem == "classification":
        def fn(idx: np.ndarray) -> dict[str, float]:
            return classification_metrics(pred[idx], y[idx], task.classes)
        drawn = draw(fn, len(y), opts.bootstrap, opts.seed)
        out = {"metrics": intervals(*drawn), "confusion": confusion_matrix(y, pred.argmax(1), task.outputs).tolist()}
        out["roc"] = {c: dict(zip(("fpr", "tpr"), (a.tolist() for a in roc_curve(pred[:, k], y == k))))
                      for k, c in enumerate(task.classes)}
        return out, drawn

    def fn(idx: np.ndarray) -> dict[str, float]:
        return regression_metrics(pred[idx], y[idx], task.targets)
    drawn = draw(fn, len(y), opts.bootstrap, opts.seed)
    return {"metrics": intervals(*drawn)}, drawn


def _task_figures(task: Task, y: np.ndarray, predictions: dict[str, np.ndarray], versions: dict[str, Any],
                  out: Path) -> list[Path]:
    if task.problem == "regression":
        return [figures.pred_vs_true_figure(out / f"{task.name}_pred_vs_true.png", task.title, task.targets, y,
                                            predictions)]
    curves = {v: [(np.asarray(r["roc"][c]["fpr"]), np.asarray(r["roc"][c]["tpr"])) for c in task.classes]
              for v, r in versions.items()}
    aucs = {v: [r["metrics"][f"auc_{c}"]["value"] for c in task.classes] for v, r in versions.items()}
    return [figures.roc_figure(out / f"{task.name}_roc.png", task.title, task.classes, curves, aucs),
            figures.confusion_figure(out / f"{task.name}_confusion.png", task.title, task.classes,
                                     {v: np.asarray(r["confusion"]) for v, r in versions.items()})]


# ------------------------------------------------------------------------------------------- the table
def _cell(m: dict[str, float]) -> str:
    fmt = (lambda x: "nan" if not math.isfinite(x) else f"{x:.3f}" if abs(x) >= 0.01 or x == 0 else f"{x:.2e}")
    ci = f" [{fmt(m['lo'])}, {fmt(m['hi'])}]" if math.isfinite(m["lo"]) else ""
    return fmt(m["value"]) + ci


def render_table(results: dict[str, Any]) -> str:
    """``downstream.md``: one table per task, rows = versions, columns = metrics with [95 % CI]."""
    opts = results["options"]
    lines = [f"# Downstream science on {Path(results['data']['path']).name}", "",
             f"Networks trained on HR training images, scored on {', '.join(results['versions'])} versions of the "
             f"same test images; {LR_TRAINED} = the same architecture trained on bicubically upsampled LR images. "
             f"Intervals: {int(opts['ci_level'] * 100)} % percentile bootstrap over test images "
             f"(B = {opts['bootstrap']}, seed {opts['seed']}); {opts['epochs']} epochs.", ""]
    for note in results["notes"]:
        lines += [f"> {note}", ""]
    for name, task in results["tasks"].items():
        if task["problem"] == "classification":
            lines += [f"## {task['title']} ({name}; classes {', '.join(task['classes'])}; {task['n_train']} train / "
                      f"{task['n_test']} test images)", ""]
            lines += _table(task["versions"], {c: c for c in CLASSIFICATION_COLUMNS})
            continue
        lines += [f"## {task['title']} ({name}; {task['n_train']} train / {task['n_test']} test images)", ""]
        for target in task["targets"]:
            lines += [f"### {target}", ""]
            lines += _table(task["versions"], {head: f"{m}_{target}" for head, m in REGRESSION_COLUMNS.items()})
    return "\n".join(lines)


def _table(versions: dict[str, Any], columns: dict[str, str]) -> list[str]:
    """Markdown rows: one per version, ``columns`` maps header -> metric key."""
    lines = ["| version | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for version, r in versions.items():
        lines.append(f"| {version} | " + " | ".join(_cell(r["metrics"][key]) for key in columns.values()) + " |")
    return lines + [""]


# ------------------------------------------------------------------------------------------- MLflow
def _tracking_uri(opts: DownstreamOptions) -> str:
    if opts.tracking_uri:
        return opts.tracking_uri
    # The project's default store (lensearch.search.tracking.default_tracking_uri), written out here so this
    # command does not import the search package (and Ray with it).
    store = opts.store.resolve()
    store.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{store / 'mlflow.db'}"


def _metric_key(task: str, version: str, metric: str) -> str:
    return f"{task}/{version.replace(':', '_')}/{metric}"


def log_to_mlflow(opts: DownstreamOptions, results: dict[str, Any], exports: list[SRExport]) -> dict[str, str]:
    """One run in experiment ``downstream``: options as params, every point estimate and interval bound as a
    metric (``<task>/<version>/<metric>[_lo|_hi]``; for each SR version also the paired comparisons
    ``<task>/<version>/<metric>_vs_bicubic[_lo|_hi]`` and ``<metric>_recovered[_lo|_hi]``), the files written to ``--out`` as artifacts, and tags
    linking each SR export's MLflow runs (``lensearch.sr.<name>.trial_run_id`` / ``.export_run_id``) when its manifest has them."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    uri = _tracking_uri(opts)
    client = MlflowClient(uri)
    try:
        exp = client.get_experiment_by_name(EXPERIMENT)
        if exp is None:
            location = ((opts.store.resolve() / "artifacts" / EXPERIMENT).as_uri() if not opts.tracking_uri
                        else None)
            exp_id = client.create_experiment(EXPERIMENT, artifact_location=location,
                                              tags={"mlflow.experimentKind": "custom_model_development"})
        else:
            exp_id = exp.experiment_id
        tags = {"lensearch.kind": "downstream", "lensearch.data": results["data"]["path"],
                "lensearch.tasks": ",".join(results["tasks"]), "lensearch.version": __version__}
        for e in exports:
            tags[f"lensearch.sr.{e.name}.path"] = str(e.path)
            for key, run_id in e.run_ids.items():
                tags[f"lensearch.sr.{e.name}.{key}"] = run_id
        run = client.create_run(exp_id, run_name=f"downstream-{Path(results['data']['path']).stem}", tags=tags)
        run_id = run.info.run_id
        for key, value in {**results["options"], "data": results["data"]["path"],
                           "sr": ",".join(results["exports"]) or "none"}.items():
            client.log_param(run_id, key, value)
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        batch = []
        for tname, task in results["tasks"].items():
            values = [(version, metric, m) for version, r in task["versions"].items()
                      for metric, m in r["metrics"].items()]
            values += [(version, f"{metric}_{kind}", m) for version, r in task.get("comparisons", {}).items()
                       for metric, pair in r.items() for kind, m in pair.items()]
            for version, metric, m in values:
                for suffix, key in (("", "value"), ("_lo", "lo"), ("_hi", "hi")):
                    if math.isfinite(m[key]):
                        batch.append(Metric(_metric_key(tname, version, metric + suffix), m[key], stamp, 0))
        for a in range(0, len(batch), 500):
            client.log_batch(run_id, metrics=batch[a:a + 500])
        for name in (RESULTS, TABLE, *results["figures"], *([FEATURE_NET] if "feature_net" in results else [])):
            client.log_artifact(run_id, str(opts.out / name))
        client.set_terminated(run_id)
    except MlflowException as err:
        raise UserError(f"MLflow logging at {uri} failed: {err.message}; use --tracking-uri or --no-track") from None
    return {"run_id": run_id, "experiment_id": exp_id, "tracking_uri": uri}
