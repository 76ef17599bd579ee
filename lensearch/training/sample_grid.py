"""A picture of what a model does: one row per image, columns LR | bicubic | SR | HR | SR - HR."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def render_grid(lr: torch.Tensor, bicubic: torch.Tensor, sr: torch.Tensor, hr: torch.Tensor, path: Path) -> Path:
    """Save a PNG grid; each row shares one colour scale (HR's 0.5-99.5 percentiles), residual is symmetric."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = lr.shape[0]
    titles = ["LR", "bicubic", "SR", "HR", "SR - HR"]
    fig, axes = plt.subplots(n, 5, figsize=(10, 2.1 * n), squeeze=False)
    for i in range(n):
        h = hr[i, 0].numpy()
        lo, hi = np.percentile(h, [0.5, 99.5])
        res = sr[i, 0].numpy() - h
        lim = float(np.abs(res).max()) or 1.0
        for j, img in enumerate([lr[i, 0].numpy(), bicubic[i, 0].numpy(), sr[i, 0].numpy(), h, res]):
            ax = axes[i, j]
            if j == 4:
                ax.imshow(img, cmap="RdBu_r", vmin=-lim, vmax=lim, origin="lower")
            else:
                ax.imshow(img, cmap="magma", vmin=lo, vmax=hi, origin="lower")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(titles[j], fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80, format="png")
    plt.close(fig)
    return Path(path)
