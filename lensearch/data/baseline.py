"""Interpolation baselines: upsample LR with ``torch.nn.functional.interpolate``.

Their scores on a split (and the noise ceiling) are :func:`lensearch.evaluation.baseline_metrics`: the same
streaming scorer as a model's.

Note on ``antialias``: for *bilinear* upsampling it changes nothing, but for *bicubic* PyTorch switches
kernels: ``antialias=False`` (the default, and ``bicubic`` here) uses the Keys cubic with a = -0.75 (as
OpenCV's INTER_CUBIC), ``antialias=True`` uses a = -0.5 (as PIL's BICUBIC), even when upsampling; the two
differ by a few percent of the pixel range. ``bicubic-pil`` is the latter, for comparison with numbers
computed with PIL.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from lensearch.errors import UserError

__all__ = ["METHODS", "upsample"]

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

