"""Classification and regression metrics in numpy, on predictions of one version of the test images.

Classification (``probs`` (N, K) class probabilities, ``y`` (N,) true class indices):
accuracy; macro precision, recall and F1 (the mean over the classes present in ``y``; a class never
predicted has precision 0, as in scikit-learn); one-vs-rest ROC-AUC per class (the Mann-Whitney statistic
with ties counted half, so a constant score gives 0.5) and their mean; ROC curves; the confusion matrix.

Regression (``pred``, ``true`` (N, T)): per target MAE, RMSE and bias (mean of pred - true).
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

__all__ = ["classification_metrics", "confusion_matrix", "regression_metrics", "roc_auc", "roc_curve"]


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """P(score of a random positive > score of a random negative) + 0.5 P(tie); NaN without both kinds."""
    positive = np.asarray(positive, dtype=bool)
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(np.asarray(scores, dtype=np.float64))  # ties get their average rank
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def roc_curve(scores: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false positive rate, true positive rate) at every distinct threshold, from (0, 0) to (1, 1)."""
    scores = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(positive, dtype=bool)
    order = np.argsort(-scores, kind="mergesort")
    s, p = scores[order], positive[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(s) != 0), s.size - 1] if s.size else np.zeros(0, int)
    tp, fp = np.cumsum(p)[last_of_tie], np.cumsum(~p)[last_of_tie]
    n_pos, n_neg = max(int(p.sum()), 1), max(int((~p).sum()), 1)
    return np.r_[0.0, fp / n_neg], np.r_[0.0, tp / n_pos]


def confusion_matrix(y: np.ndarray, pred: np.ndarray, k: int) -> np.ndarray:
    """(k, k) counts: row = true class, column = predicted class."""
    return np.bincount(np.asarray(y, np.int64) * k + np.asarray(pred, np.int64), minlength=k * k).reshape(k, k)


def classification_metrics(probs: np.ndarray, y: np.ndarray, classes: list[str]) -> dict[str, float]:
    """``accuracy``, ``precision_macro``, ``recall_macro``, ``f1_macro``, ``auc_macro`` and ``auc_<class>``."""
    probs, y = np.asarray(probs, np.float64), np.asarray(y, np.int64)
    k = len(classes)
    cm = confusion_matrix(y, probs.argmax(axis=1), k)
    tp = np.diag(cm).astype(np.float64)
    predicted, actual = cm.sum(axis=0), cm.sum(axis=1)
    precision = np.where(predicted > 0, tp / np.maximum(predicted, 1), 0.0)
    recall = np.where(actual > 0, tp / np.maximum(actual, 1), np.nan)
    f1 = np.where(precision + np.nan_to_num(recall) > 0,
                  2 * precision * np.nan_to_num(recall) / np.maximum(precision + np.nan_to_num(recall), 1e-300), 0.0)
    present = actual > 0
    out = {"accuracy": float(tp.sum() / max(y.size, 1)),
           "precision_macro": float(precision[present].mean()) if present.any() else float("nan"),
           "recall_macro": float(recall[present].mean()) if present.any() else float("nan"),
           "f1_macro": float(f1[present].mean()) if present.any() else float("nan")}
    aucs = [roc_auc(probs[:, c], y == c) for c in range(k)]
    out["auc_macro"] = float(np.nanmean(aucs)) if np.isfinite(aucs).any() else float("nan")
    out.update({f"auc_{name}": a for name, a in zip(classes, aucs)})
    return out


def regression_metrics(pred: np.ndarray, true: np.ndarray, targets: list[str]) -> dict[str, float]:
    """``mae_<t>``, ``rmse_<t>``, ``bias_<t>`` (mean pred - true) per target column."""
    err = np.asarray(pred, np.float64) - np.asarray(true, np.float64)
    out: dict[str, float] = {}
    for i, t in enumerate(targets):
        out[f"mae_{t}"] = float(np.abs(err[:, i]).mean())
        out[f"rmse_{t}"] = float(np.sqrt(np.square(err[:, i]).mean()))
        out[f"bias_{t}"] = float(err[:, i].mean())
    return out
