"""Interpolation baselines: upsample LR with ``torch.nn.functional.interpolate`` and score against HR.

Scores follow the project's metric convention (:func:`lensearch.metrics.evaluate`: unit-scaled by the
reference). Where the file has ``hr_clean``, each method is also scored against it (``*_clean``), and the
**noise ceiling** is reported: ``hr_clean`` scored against the noisy ``hr``, i.e. what a perfect model
could reach against the noisy target.

Note on ``antialias``: for *bilinear* upsampling it changes nothing, but for *bicubic* PyTorch switches
kernels: ``antialias=False`` (the default, and ``bicubic`` here) uses the Keys cubic with a = -0.75 (as
OpenCV's INTER_CUBIC), ``antialias=True`` uses a = -0.5 (as PIL's BICUBIC), even when upsampling; the two
differ by a few percent of the pixel range. ``bicubic-pil`` is the latter, for comparison with numbers
computed with PIL.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from lensearch.data.h5format import iter_batches, open_h5, split_indices
from lensearch.errors import UserError
from lensearch.metrics import METRIC_NAMES, MetricSums

__all__ = ["METHODS", "baseline_metrics", "upsample"]

METHODS: dict[str, dict[str, Any]] = {
    "bicubic": {"mode": "bicubic", "align_corners": False},
    "bicubic-pil": {"mode": "bicubic", "align_corners": False, "antialias": True},
    "bilinear": {"mode": "bilinear", "align_corners": False},
    "nearest": {"mode": "nearest"},
}


def upsample(lr: torch.Tensor, size: Sequence[int], method: str = "bicubic") -> torch.Tensor:
    """Upsample (N,C,h,w) to ``size`` = (H, W) with one of :data:`METHODS`."""
    if method not in METHODS:
        raise UserError(f"method: expected one of {', '.join(METHODS)}, got {method!r}")
    return F.interpolate(lr, size=tuple(size), **METHODS[method])


def baseline_metrics(path: str | os.PathLike, split: str = "test",
                     methods: Sequence[str] = ("bicubic", "bilinear", "nearest"),
                     batch_size: int = 64, device: str | torch.device = "cpu",
                     max_images: int | None = None) -> dict[str, Any]:
    """Mean PSNR/SSIM/MSE of each method on ``split`` (its first ``max_images`` images when given: the ones a
    search's trials are validated on).

    Returns ``{"file", "split", "n", "scale", "methods": {name: {"psnr", "ssim", "mse"[, "psnr_clean",
    "ssim_clean", "mse_clean"]}}, "noise_ceiling": {"psnr", "ssim", "mse"} or None}``.
    """
    for m in methods:
        if m not in METHODS:
            raise UserError(f"--methods: expected names from {', '.join(METHODS)}, got {m!r}")
    if not methods:
        raise UserError("--methods: expected at least one method")
    info = open_h5(path)
    if split_indices(path, split).size == 0:
        raise UserError(f"{path}: split '{split}' is empty")
    names = [*METRIC_NAMES, *(f"{k}_clean" for k in METRIC_NAMES)] if info.has_clean else list(METRIC_NAMES)
    sums = {m: MetricSums(names) for m in methods}
    ceiling = MetricSums()
    keys = ("lr", "hr", "hr_clean") if info.has_clean else ("lr", "hr")
    for batch in iter_batches(path, split, batch_size, keys, max_images=max_images):
        t = {k: torch.from_numpy(batch[k]).to(device) for k in keys}
        for m in methods:
            pred = upsample(t["lr"], info.hr_shape, m)
            sums[m].update(pred, t["hr"])
            if info.has_clean:
                sums[m].update(pred, t["hr_clean"], suffix="_clean")
        if info.has_clean:
            ceiling.update(t["hr_clean"], t["hr"])
    return {
        "file": str(info.path), "split": split, "n": ceiling.counts["psnr"] or sums[methods[0]].counts["psnr"],
        "scale": info.scale, "methods": {m: s.means() for m, s in sums.items()},
        "noise_ceiling": ceiling.means() if info.has_clean else None,
    }
