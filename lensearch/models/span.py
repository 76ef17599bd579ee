"""SPAN: Swift Parameter-free Attention Network (after Wan et al. 2024, "Swift Parameter-free Attention
Network for Efficient Super-Resolution", CVPR 2024 workshops; first in the NTIRE 2024 efficient-SR challenge).

Chosen over RLFN / SAFMN because every op is a 3x3 conv, an elementwise activation or a concat: nothing
that is slow on CPU (no attention matrices, no pooling pyramids) or awkward to trace / export.

- Shallow features: 3x3 conv (in -> F).
- ``num_blocks`` swift parameter-free attention blocks (SPAB). Each: three 3x3 convs with SiLU between
  them, h1 -> h2 -> h3; the attention map is computed from the features themselves with no parameters,
  ``a = sigmoid(h3) - 0.5`` (a symmetric activation: zero at zero, so weak features are suppressed and
  strong ones of either sign pass); the block output is ``(h3 + x) * a`` (the block input added before
  the attention is applied).
- Fusion: 3x3 conv on the last block output, then a 1x1 conv over the concatenation of the shallow
  features, that conv's output, the first block's output and the last block's first-conv features h1.
- Upsampler: 3x3 conv (F -> in * scale^2) + PixelShuffle(scale), added to bicubic(LR).

Simplified / changed from the paper: SPAN trains each 3x3 conv as a re-parameterisable "Conv3XC"
(1x1 -> 3x3 -> 1x1 expansion plus a 1x1 skip, folded into one 3x3 conv for inference); here they are
plain 3x3 convs (the same inference-time network, without the training-time over-parameterisation).
No RGB mean shift / value-range scaling (lensearch normalises the data). Fewer, narrower blocks by default
(4 x 32 channels vs the paper's 6 x 48) to stay fast on CPU. Added: the global skip over bicubic(LR)
(``bicubic_skip``) with a zero-initialised upsampler conv, so the untrained model is exactly bicubic.
Fully convolutional: any input size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lensearch.models.common import BICUBIC_SKIP, bicubic, check_scale, conv3, zero_init_tail
from lensearch.models.registry import ModelSpec, Param, register


class SPAB(nn.Module):
    """Three 3x3 convs (SiLU between) + the parameter-free attention; returns (output, first-conv features)."""

    def __init__(self, features: int):
        super().__init__()
        self.c1, self.c2, self.c3 = (conv3(features, features) for _ in range(3))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h1 = self.c1(x)
        h3 = self.c3(F.silu(self.c2(F.silu(h1))))
        return (h3 + x) * (torch.sigmoid(h3) - 0.5), h1


class SPAN(nn.Module):
    def __init__(self, scale: int = 2, in_channels: int = 1, num_features: int = 32, num_blocks: int = 4,
                 bicubic_skip: bool = True):
        super().__init__()
        self.scale, self.bicubic_skip = check_scale(scale), bicubic_skip
        self.head = conv3(in_channels, num_features)
        self.blocks = nn.ModuleList(SPAB(num_features) for _ in range(num_blocks))
        self.body_conv = conv3(num_features, num_features)
        self.fuse = nn.Conv2d(4 * num_features, num_features, 1)
        self.tail = zero_init_tail(conv3(num_features, in_channels * scale * scale), bicubic_skip)
        self.shuffle = nn.PixelShuffle(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shallow = self.head(x)
        h, first, h1 = shallow, shallow, shallow
        for i, block in enumerate(self.blocks):
            h, h1 = block(h)
            if i == 0:
                first = h
        out = self.fuse(torch.cat([shallow, self.body_conv(h), first, h1], 1))
        out = self.shuffle(self.tail(out))
        return out + bicubic(x, self.scale) if self.bicubic_skip else out


register(ModelSpec(
    name="span", kind="pixel", build=SPAN,
    params=(
        Param("num_features", int, 32, "feature channels", low=4, high=256),
        Param("num_blocks", int, 4, "swift parameter-free attention blocks (3 convs each)", low=1, high=32),
        BICUBIC_SKIP,
    ),
    summary="SPAN (NTIRE 2024 efficient SR): conv blocks with parameter-free sigmoid attention, pixel shuffle",
))
