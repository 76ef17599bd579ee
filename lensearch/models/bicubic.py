"""Bicubic interpolation: the no-parameter baseline that appears in every comparison."""

from __future__ import annotations

import torch
from torch import nn

from lensearch.models.common import bicubic, check_scale
from lensearch.models.registry import ModelSpec, register


class Bicubic(nn.Module):
    """``F.interpolate(x, scale_factor=scale, mode="bicubic", align_corners=False)``; any input size."""

    def __init__(self, scale: int = 2, in_channels: int = 1):
        super().__init__()
        self.scale = check_scale(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return bicubic(x, self.scale)


register(ModelSpec(
    name="bicubic", kind="interp", build=Bicubic, params=(),
    summary="bicubic interpolation (align_corners=False); no trainable parameters",
))
