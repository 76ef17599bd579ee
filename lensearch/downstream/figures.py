"""PNG figures (matplotlib, Agg backend): ROC curves per class with one line per version, confusion matrices
per version, predicted-vs-true scatter per regression target and version."""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["confusion_figure", "pred_vs_true_figure", "roc_figure"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _grid(plt, n: int, rows: int = 1, size: float = 3.2):
    fig, axes = plt.subplots(rows, n, figsize=(size * n, size * rows), squeeze=False)
    return fig, axes


def roc_figure(path: Path, title: str, classes: list[str], curves: dict[str, list[tuple[np.ndarray, np.ndarray]]],
               aucs: dict[str, list[float]]) -> Path:
    """``curves[version][c]`` = (fpr, tpr) of class ``c`` one-vs-rest; one panel per class."""
    plt = _pyplot()
    fig, axes = _grid(plt, len(classes))
    for c, name in enumerate(classes):
        ax = axes[0, c]
        for version, per_class in curves.items():
            fpr, tpr = per_class[c]
            ax.plot(fpr, tpr, lw=1.3, label=f"{version} (AUC {aucs[version][c]:.3f})")
        ax.plot([0, 1], [0, 1], ls=":", c="grey", lw=0.8)
        ax.set(title=f"{name} vs rest", xlabel="false positive rate", ylabel="true positive rate",
               xlim=(0, 1), ylim=(0, 1.01))
        ax.legend(fontsize=6, loc="lower right")
    fig.suptitle(f"{title}: ROC curves (test images)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def confusion_figure(path: Path, title: str, classes: list[str], matrices: dict[str, np.ndarray]) -> Path:
    """One confusion matrix (rows true, columns predicted, counts) per version."""
    plt = _pyplot()
    fig, axes = _grid(plt, len(matrices))
    for ax, (version, cm) in zip(axes[0], matrices.items()):
        cm = np.asarray(cm)
        ax.imshow(cm, cmap="Blues", vmin=0)
        for (i, j), v in np.ndenumerate(cm):
            ax.text(j, i, str(int(v)), ha="center", va="center", fontsize=8,
                    color="white" if v > cm.max() / 2 else "black")
        ax.set(title=version, xticks=range(len(classes)), yticks=range(len(classes)), xlabel="predicted",
               ylabel="true")
        ax.set_xticklabels(classes, fontsize=7, rotation=30)
        ax.set_yticklabels(classes, fontsize=7)
    fig.suptitle(f"{title}: confusion matrices (test images)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def pred_vs_true_figure(path: Path, title: str, targets: list[str], true: np.ndarray,
                        preds: dict[str, np.ndarray]) -> Path:
    """Rows: targets; columns: versions; each panel the predictions against the truth and the identity line."""
    plt = _pyplot()
    fig, axes = plt.subplots(len(targets), len(preds), figsize=(2.8 * len(preds), 2.8 * len(targets)),
                             squeeze=False)
    for i, target in enumerate(targets):
        lo = min(float(true[:, i].min()), *(float(p[:, i].min()) for p in preds.values()))
        hi = max(float(true[:, i].max()), *(float(p[:, i].max()) for p in preds.values()))
        for j, (version, pred) in enumerate(preds.items()):
            ax = axes[i, j]
            ax.scatter(true[:, i], pred[:, i], s=6, alpha=0.7)
            ax.plot([lo, hi], [lo, hi], ls=":", c="grey", lw=0.8)
            ax.set(xlim=(lo, hi), ylim=(lo, hi))
            if i == 0:
                ax.set_title(version, fontsize=8)
            if j == 0:
                ax.set_ylabel(f"predicted {target}", fontsize=8)
            if i == len(targets) - 1:
                ax.set_xlabel(f"true {target}", fontsize=8)
            ax.tick_params(labelsize=6)
    fig.suptitle(f"{title}: predicted vs true (test images)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
