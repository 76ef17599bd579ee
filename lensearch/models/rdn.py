"""Residual Dense Network (Zhang et al. 2018, "Residual Dense Network for Image Super-Resolution").

Shallow features (two 3x3 convs) -> D residual dense blocks (C densely connected conv+ReLU layers of
growth G, 1x1 local fusion, local residual) -> global fusion of all block outputs (1x1 + 3x3) plus the
first shallow features -> pixel-shuffle upsampler -> 3x3 conv. Fully convolutional: any input size.
Optional global skip: the output is added to bicubic(LR), and the last conv starts at zero so the
untrained model is exactly bicubic.
"""

from __future__ import annotations

import torch
from torch import nn

from lensearch.models.common import BICUBIC_SKIP, bicubic, conv3, pixel_shuffle_upsampler, zero_init_tail
from lensearch.models.registry import ModelSpec, Param, register


class DenseBlock(nn.Module):
    """C conv3x3+ReLU layers, each fed the concatenation of the block input and all earlier outputs."""

    def __init__(self, features: int, layers: int, growth: int):
        super().__init__()
        self.layers = nn.ModuleList(
            nn.Sequential(conv3(features + i * growth, growth), nn.ReLU(inplace=True)) for i in range(layers))
        self.fuse = nn.Conv2d(features + layers * growth, features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = x
        for layer in self.layers:
            feats = torch.cat([feats, layer(feats)], 1)
        return x + self.fuse(feats)


class RDN(nn.Module):
    def __init__(self, scale: int = 2, in_channels: int = 1, num_features: int = 32, num_blocks: int = 4,
                 num_layers: int = 4, growth: int = 16, bicubic_skip: bool = True):
        super().__init__()
        self.scale, self.bicubic_skip = scale, bicubic_skip
        self.sfe1 = conv3(in_channels, num_features)
        self.sfe2 = conv3(num_features, num_features)
        self.blocks = nn.ModuleList(DenseBlock(num_features, num_layers, growth) for _ in range(num_blocks))
        self.gff = nn.Sequential(nn.Conv2d(num_blocks * num_features, num_features, 1),
                                 conv3(num_features, num_features))
        self.upsample = pixel_shuffle_upsampler(num_features, scale)
        self.tail = zero_init_tail(conv3(num_features, in_channels), bicubic_skip)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f1 = self.sfe1(x)
        h, outs = self.sfe2(f1), []
        for block in self.blocks:
            h = block(h)
            outs.append(h)
        out = self.tail(self.upsample(self.gff(torch.cat(outs, 1)) + f1))
        return out + bicubic(x, self.scale) if self.bicubic_skip else out


register(ModelSpec(
    name="rdn", kind="pixel", build=RDN,
    params=(
        Param("num_features", int, 32, "feature channels G0", low=4, high=256),
        Param("num_blocks", int, 4, "residual dense blocks D", low=1, high=32),
        Param("num_layers", int, 4, "conv layers per block C", low=1, high=16),
        Param("growth", int, 16, "growth rate G (channels added per layer)", low=4, high=128),
        BICUBIC_SKIP,
    ),
    summary="Residual Dense Network (dense blocks + global feature fusion), pixel-shuffle upsampler",
))
