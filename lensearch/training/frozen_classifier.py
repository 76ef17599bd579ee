"""The downstream objective ``val_downstream_auc``: a frozen lensing classifier scores every trial's SR images.

A search that names ``val_downstream_auc`` (as an objective or ``train.monitor``) gets, on the driver and once
per data file, a classifier trained on the file's **HR training images** (:func:`ensure_classifier`, the same
training as ``lensearch downstream``: :func:`lensearch.training.classifier.train_task`). It is cached in the
store under ``classifiers/``, keyed by the SHA-256 of the data file and the settings, so later searches on the
same file reuse it. Every trial receives its path in the run info (``RunInfo.downstream``) and, at every
validation, scores its SR images of the validation split (:class:`DownstreamScorer`): normalization inverted,
each image scaled to [0, 1] by its own range (as the classifier was trained), class probabilities collected
over all DDP ranks by a sum of zero-filled full-size tensors indexed by validation image, and the macro
one-vs-rest ROC-AUC (:func:`macro_auc`) reported as ``val_downstream_auc``. The driver also scores the HR and
the bicubic validation images once (:func:`reference_aucs`): ``hr_val_downstream_auc`` (the ceiling) and
``bicubic_val_downstream_auc`` (what SR must beat), next to ``bicubic_val_psnr`` in the search's reference.

The task (search file section ``downstream: {task: auto | find | classify}``): ``find`` is lens finding
(lens vs ``non_lens``), ``classify`` substructure classification (the file's lensed classes); ``auto`` (the
default) is ``find`` when the file has ``non_lens`` images, else ``classify``. Lens finding is the meaningful
choice on small simulated images (subhalos do not show at 0.1"/px, so substructure classes stay at chance on
the ``tiny`` preset). The classifier never sees the validation split (it trains a fixed number of epochs on
the training split), so the AUC is an honest held-out score.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lensearch.data.digest import file_digest
from lensearch.errors import UserError, expect

__all__ = ["DEFAULTS", "METRIC", "TASKS", "DownstreamScorer", "choose_task", "ensure_classifier", "macro_auc",
           "reference_aucs", "score_images"]

METRIC = "val_downstream_auc"
TASKS = ("auto", "find", "classify")
DEFAULTS: dict[str, Any] = {"task": "auto", "epochs": 20, "seed": 0}
CACHE_DIR = "classifiers"
FORMAT = 1  # bump when the training or the file changes, so old cache entries are not reused


def choose_task(info, task: str = "auto", where: str = "downstream.task"):
    """The :class:`~lensearch.data.tasks.Task` of the objective on the file described by ``info``."""
    from lensearch.data.tasks import NON_LENS, plan_tasks

    expect(task in TASKS, f"{where}: expected one of {', '.join(TASKS)}, got {task!r}")
    name = task if task != "auto" else ("find" if NON_LENS in info.class_names else "classify")
    try:
        return plan_tasks(info, name)[0][0]
    except UserError as err:
        detail = str(err).split(": ", 1)[1]
        raise UserError(f"{METRIC} needs class labels for {name} ({where} {task}): {detail}") from None


def ensure_classifier(data_path: str | os.PathLike, settings: dict[str, Any] | None, cache_dir: str | os.PathLike,
                      log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The frozen classifier of ``data_path`` for ``settings`` (``task``, ``epochs``, ``seed``): trained on the
    HR training images unless the cache already holds it. Returns the run-info entry ``{"path", "task",
    "classes", "trained"}`` (``trained``: False when it came from the cache)."""
    from lensearch.data.store import iter_batches, open_h5
    from lensearch.models.feature_net import save_feature_net
    from lensearch.training.classifier import DEFAULT_NET, train_task

    settings = {**DEFAULTS, **(settings or {})}
    info = open_h5(data_path)
    task = choose_task(info, settings["task"])
    key = {"format": FORMAT, "data": file_digest(info.path), "task": task.name, "epochs": int(settings["epochs"]),
           "seed": int(settings["seed"]), "net": DEFAULT_NET}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    path = Path(cache_dir) / f"{info.path.stem}-{task.name}-{digest}.pt"
    entry = {"path": str(path.resolve()), "task": task.name, "classes": list(task.classes), "trained": False}
    if path.is_file():
        return entry
    parts = list(iter_batches(info.path, "train", 512, ("hr", "label")))
    expect(parts, f"{info.path}: {METRIC} needs training images to train its classifier on")
    hr, label = (np.concatenate([p[k] for p in parts]) for k in ("hr", "label"))
    rows, y = task.select(_Rows(label))
    present = np.unique(y)
    expect(present.size >= 2, f"{info.path}: {METRIC} ({task.name}) needs at least two classes among the training "
           f"images, found {[task.classes[i] for i in present]}")
    if log:
        log(f"{METRIC}: training the frozen {task.title} classifier on {len(rows)} HR training images of "
            f"{info.path.name} ({settings['epochs']} epochs; cached as {path})")
    trained = train_task(task, hr[rows], y, epochs=int(settings["epochs"]), seed=int(settings["seed"]))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    save_feature_net(trained.net, tmp)
    blob = torch.load(tmp, map_location="cpu", weights_only=True)
    blob["downstream"] = {"task": task.name, "classes": list(task.classes),
                          "class_of_label": {str(k): v for k, v in task.class_of_label.items()},
                          "key": key, "seconds": trained.seconds}
    torch.save(blob, tmp)
    os.replace(tmp, path)
    return {**entry, "trained": True}


class _Rows:
    """The one field :meth:`Task.select` of a classification task reads."""

    def __init__(self, label: np.ndarray):
        self.label = np.asarray(label)


def load_classifier(path: str | os.PathLike) -> tuple[Any, dict[int, int], list[str]]:
    """(FeatureNet in eval mode, file label -> class index, class names) from :func:`ensure_classifier`'s file."""
    from lensearch.models.feature_net import load_feature_net
    from lensearch.storage import local_copy

    path = local_copy(path)  # a search on a remote store passes the classifier's URI to its trials
    blob = torch.load(path, map_location="cpu", weights_only=True)
    meta = blob.get("downstream") if isinstance(blob, dict) else None
    if meta is None:
        raise UserError(f"{path}: not a frozen downstream classifier (no 'downstream' entry)")
    net = load_feature_net(path, where=METRIC)
    net.eval()
    return net, {int(k): int(v) for k, v in meta["class_of_label"].items()}, list(meta["classes"])


@torch.no_grad()
def score_images(net, images: np.ndarray | torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Class probabilities (N, K) of images in data units (each scaled to [0, 1] by its own range first)."""
    from lensearch.training.classifier import unit_scale_images

    x = torch.as_tensor(images)
    device = next(net.parameters()).device
    out = [torch.softmax(net(unit_scale_images(x[a:a + batch_size]).to(device))[1].float(), dim=1)
           for a in range(0, len(x), batch_size)]
    return torch.cat(out) if out else torch.zeros(0, net.config["num_classes"])


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n, ties sharing their average rank."""
    order = np.argsort(x, kind="mergesort")
    s = x[order]
    starts = np.r_[0, np.flatnonzero(np.diff(s) != 0) + 1]
    ends = np.r_[starts[1:], s.size]
    avg = (starts + ends + 1) / 2.0  # mean of ranks starts+1 .. ends
    ranks = np.empty(s.size)
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def macro_auc(probs: np.ndarray, y: np.ndarray) -> float:
    """Mean over classes of the one-vs-rest ROC-AUC (Mann-Whitney, ties counted half) of ``probs`` (N, K) for
    true classes ``y`` (N,); classes without both positives and negatives are left out; NaN if none is left."""
    probs, y = np.asarray(probs, np.float64), np.asarray(y, np.int64)
    aucs = []
    for c in range(probs.shape[1]):
        pos = y == c
        n_pos, n_neg = int(pos.sum()), int((~pos).sum())
        if n_pos and n_neg:
            ranks = _average_ranks(probs[:, c])
            aucs.append((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
    return float(np.mean(aucs)) if aucs else float("nan")


def _val_targets(data_path: str, class_of_label: dict[int, int], rows: np.ndarray) -> np.ndarray:
    """Class index of each validation row (-1: a row the task does not use)."""
    from lensearch.data.h5format import h5open

    with h5open(data_path) as f:
        label = f["label"][()]
    return np.array([class_of_label.get(int(v), -1) for v in label[rows]], dtype=np.int64)


class DownstreamScorer:
    """``val_downstream_auc`` of one validation pass, over all DDP ranks.

    ``rows``: the file rows of the scored validation images, in order (the loop's val set). :meth:`reset`,
    then :meth:`add` each batch of SR images (data units) with its file rows, then :meth:`value` (every rank
    calls it: it all-reduces)."""

    def __init__(self, path: str, data_path: str, rows: np.ndarray, device: torch.device):
        self.net, class_of_label, self.classes = load_classifier(path)
        self.net.to(device)
        self.device = device
        self.rows = np.asarray(rows, np.int64)
        self.position = {int(r): i for i, r in enumerate(self.rows)}
        self.y = _val_targets(data_path, class_of_label, self.rows)
        self.reset()

    def reset(self) -> None:
        self.probs = torch.zeros(len(self.rows), len(self.classes), dtype=torch.float64, device=self.device)

    def add(self, sr: torch.Tensor, file_rows: torch.Tensor) -> None:
        pos = torch.as_tensor([self.position[int(r)] for r in file_rows], device=self.device)
        self.probs[pos] = score_images(self.net, sr.float()).to(self.device, torch.float64)

    def value(self, ctx) -> float:
        probs = ctx.all_reduce_sum(self.probs).cpu().numpy()
        keep = self.y >= 0
        return macro_auc(probs[keep], self.y[keep])


def reference_aucs(entry: dict[str, Any], data_path: str, max_images: int = 0) -> dict[str, float]:
    """The frozen classifier's AUC on the HR and on the bicubically upsampled LR validation images (the first
    ``max_images``; 0 = all): ``hr_val_downstream_auc``, ``bicubic_val_downstream_auc``."""
    from lensearch.data.store import iter_batches, open_h5
    from lensearch.models.common import bicubic

    net, class_of_label, _ = load_classifier(entry["path"])
    scale = open_h5(data_path).scale
    parts = list(iter_batches(data_path, "val", 256, ("hr", "lr", "label"), max_images=max_images or None))
    hr, lr, label = (np.concatenate([p[k] for p in parts]) for k in ("hr", "lr", "label"))
    y = np.array([class_of_label.get(int(v), -1) for v in label], dtype=np.int64)
    keep = y >= 0
    with torch.no_grad():
        bic = bicubic(torch.from_numpy(np.ascontiguousarray(lr, np.float32)), scale)
    return {f"{name}_{METRIC}": macro_auc(score_images(net, images).numpy()[keep], y[keep])
            for name, images in (("hr", hr), ("bicubic", bic))}


def prepare_downstream(data_path: str, settings: dict[str, Any] | None, cache_dir: str | os.PathLike,
                       max_images: int = 0, log: Callable[[str], None] | None = None
                       ) -> tuple[dict[str, Any], dict[str, float]]:
    """What the search driver does once: the cached (or freshly trained) classifier's run-info entry, and its
    HR / bicubic AUCs on the validation images the trials are scored on."""
    entry = ensure_classifier(data_path, settings, cache_dir, log=log)
    return entry, reference_aucs(entry, data_path, max_images)
