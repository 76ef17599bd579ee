"""Scoring a split: stream one split of a store file through LR -> SR callables into metric sums.

This is the one place a split is scored. The training loop's validation (:mod:`lensearch.training.loop`), the
export's scores (:mod:`lensearch.export.score`) and the interpolation baselines (:func:`baseline_metrics`:
``lensearch baseline`` and a search's bicubic reference) all read the split with :func:`iter_split` and score
it with :func:`stream_split` or :func:`evaluate_split`, so the same images give the same numbers everywhere.

Scores follow the project's metric convention (:func:`lensearch.metrics.evaluate`: unit-scaled by the
reference). Where the file has ``hr_clean``, every prediction is also scored against it (``*_clean``), and the
**noise ceiling** is reported: ``hr_clean`` scored against the noisy ``hr``, i.e. what a perfect model could
reach against the noisy target.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from lensearch.data.baseline import METHODS, upsample
from lensearch.data.h5format import h5open, open_h5, read_rows, split_indices
from lensearch.errors import UserError
from lensearch.metrics import METRIC_NAMES, MetricSums

__all__ = ["Predict", "add_scores", "baseline_metrics", "evaluate_split", "has_clean", "interpolation", "iter_split",
           "metric_names", "stream_split"]

Predict = Callable[[torch.Tensor], torch.Tensor]  # LR (N,C,h,w) -> SR (N,C,H,W), both in data units


def metric_names(clean: bool) -> list[str]:
    """``psnr, ssim, mse`` and, with ``clean``, the same against ``hr_clean`` (``*_clean``)."""
    return [*METRIC_NAMES, *(f"{k}_clean" for k in METRIC_NAMES)] if clean else list(METRIC_NAMES)


def has_clean(path: str | os.PathLike) -> bool:
    """Whether the file holds noise-free HR (``hr_clean``)."""
    with h5open(path) as f:
        return "hr_clean" in f


def iter_split(path: str | os.PathLike, split: str, *, batch_size: int = 64, max_images: int | None = None,
               device: str | torch.device = "cpu", clean: bool = True, rank: int = 0,
               world_size: int = 1) -> Iterator[dict[str, torch.Tensor]]:
    """Batches of ``split`` as float32 tensors on ``device``: ``lr``, ``hr``, ``hr_clean`` (with ``clean``, when
    the file has it) and ``index`` (the file rows), in row order.

    ``max_images``: only the split's first images (the ones a search's trials are validated on; 0 or None =
    all). ``rank`` of ``world_size``: only every ``world_size``-th of those, from the ``rank``-th on, so the
    ranks of a DDP run together score each image exactly once.
    """
    rows = split_indices(path, split)
    if max_images:
        rows = rows[:max_images]
    rows = rows[rank::world_size]
    with h5open(path) as f:
        keys = [k for k in (("lr", "hr", "hr_clean") if clean else ("lr", "hr")) if k in f]
        for a in range(0, rows.size, batch_size):
            r = rows[a:a + batch_size]
            batch = {k: torch.from_numpy(read_rows(f[k], r).astype(np.float32, copy=False)).to(device) for k in keys}
            batch["index"] = torch.from_numpy(r)
            yield batch


def add_scores(sums: MetricSums, sr: torch.Tensor, batch: Mapping[str, torch.Tensor]) -> None:
    """Add ``sr``'s metrics against the batch's ``hr`` (and against its ``hr_clean`` as ``*_clean``) to ``sums``."""
    sums.update(sr, batch["hr"])
    if "hr_clean" in batch:
        sums.update(sr, batch["hr_clean"], suffix="_clean")


def stream_split(path: str | os.PathLike, split: str, predict: Predict, *, batch_size: int = 64,
                 max_images: int | None = None, device: str | torch.device = "cpu", clean: bool = True,
                 rank: int = 0, world_size: int = 1, extra_names: Sequence[str] = (),
                 extra: Callable[[dict[str, torch.Tensor], torch.Tensor], Mapping[str, torch.Tensor]] | None = None,
                 ) -> MetricSums:
    """The metric sums of ``predict`` on ``split`` (arguments as in :func:`iter_split`): ``psnr, ssim, mse``
    and, with ``clean`` on a file that has ``hr_clean``, ``*_clean``.

    ``extra(batch, sr)`` (optional) is called after each batch is scored and returns more per-image values to
    add, named in ``extra_names`` (which come first in the sums), e.g. a validation loss. The sums are this
    rank's own: combine ranks with :meth:`MetricSums.as_tensor` (every rank has the same names).
    """
    sums = MetricSums([*extra_names, *metric_names(clean and has_clean(path))])
    for batch in iter_split(path, split, batch_size=batch_size, max_images=max_images, device=device, clean=clean,
                            rank=rank, world_size=world_size):
        sr = predict(batch["lr"])
        add_scores(sums, sr, batch)
        if extra is not None:
            sums.add(extra(batch, sr))
    return sums


@torch.no_grad()
def evaluate_split(path: str | os.PathLike, split: str, predictors: Mapping[str, Predict], *,
                   batch_size: int = 64, max_images: int | None = None,
                   device: str | torch.device = "cpu") -> dict[str, Any]:
    """Mean metrics of each of ``predictors`` (name -> LR -> SR callable) on ``split`` (its first
    ``max_images`` images when given), in one pass over the data.

    Returns ``{"file", "split", "n", "scale", "methods": {name: {"psnr", "ssim", "mse"[, "psnr_clean",
    "ssim_clean", "mse_clean"]}}, "noise_ceiling": {"psnr", "ssim", "mse"} or None}``.
    """
    info = open_h5(path)
    if split_indices(path, split).size == 0:
        raise UserError(f"{path}: split '{split}' is empty")
    sums = {name: MetricSums(metric_names(info.has_clean)) for name in predictors}
    ceiling = MetricSums()
    n = 0
    for batch in iter_split(path, split, batch_size=batch_size, max_images=max_images, device=device):
        for name, predict in predictors.items():
            add_scores(sums[name], predict(batch["lr"]), batch)
        if info.has_clean:
            ceiling.update(batch["hr_clean"], batch["hr"])
        n += len(batch["index"])
    return {"file": str(info.path), "split": split, "n": n, "scale": info.scale,
            "methods": {name: s.means() for name, s in sums.items()},
            "noise_ceiling": ceiling.means() if info.has_clean else None}


def interpolation(method: str, size: Sequence[int]) -> Predict:
    """Upsampling to ``size`` = (H, W) with ``method`` (one of :data:`lensearch.data.baseline.METHODS`) as an
    LR -> SR callable."""
    return functools.partial(upsample, size=tuple(size), method=method)


def baseline_metrics(path: str | os.PathLike, split: str = "test",
                     methods: Sequence[str] = ("bicubic", "bilinear", "nearest"),
                     batch_size: int = 64, device: str | torch.device = "cpu",
                     max_images: int | None = None) -> dict[str, Any]:
    """:func:`evaluate_split` of interpolation ``methods``: what every model must beat (the noise ceiling
    bounds it from above). The result is :func:`evaluate_split`'s."""
    for m in methods:
        if m not in METHODS:
            raise UserError(f"--methods: expected names from {', '.join(METHODS)}, got {m!r}")
    if not methods:
        raise UserError("--methods: expected at least one method")
    hr_shape = open_h5(path).hr_shape
    return evaluate_split(path, split, {m: interpolation(m, hr_shape) for m in methods}, batch_size=batch_size,
                          max_images=max_images, device=device)
