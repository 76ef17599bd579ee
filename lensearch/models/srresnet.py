"""SRResNet generator (Ledig et al. 2017), registered twice: ``srresnet`` (pixel losses) and ``srgan``
(the same generator trained adversarially against the ``vgg_style`` discriminator).

9x9 conv + PReLU -> B residual blocks (conv-[BN]-PReLU-conv-[BN] + skip) -> conv-[BN] + long skip ->
pixel-shuffle x2 stages with PReLU -> 9x9 conv. Batch norm is optional (off by default: it tends to hurt
SR and is fragile with small per-worker batches). Optional global skip over bicubic(LR), with the last
conv starting at zero (the untrained model is exactly bicubic).
"""

from __future__ import annotations

import torch
from torch import nn

from lensearch.models.common import BICUBIC_SKIP, bicubic, conv3, pixel_shuffle_upsampler, zero_init_tail
from lensearch.models.registry import ModelSpec, Param, register


def _norm(channels: int, on: bool) -> nn.Module:
    return nn.BatchNorm2d(channels) if on else nn.Identity()


class ResBlock(nn.Module):
    def __init__(self, features: int, batch_norm: bool):
        super().__init__()
        self.body = nn.Sequential(conv3(features, features), _norm(features, batch_norm), nn.PReLU(),
                                  conv3(features, features), _norm(features, batch_norm))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class SRResNet(nn.Module):
    def __init__(self, scale: int = 2, in_channels: int = 1, num_blocks: int = 8, num_features: int = 32,
                 batch_norm: bool = False, bicubic_skip: bool = True):
        super().__init__()
        self.scale, self.bicubic_skip = scale, bicubic_skip
        self.head = nn.Sequential(nn.Conv2d(in_channels, num_features, 9, padding=4), nn.PReLU())
        self.body = nn.Sequential(*(ResBlock(num_features, batch_norm) for _ in range(num_blocks)),
                                  conv3(num_features, num_features), _norm(num_features, batch_norm))
        self.upsample = pixel_shuffle_upsampler(num_features, scale, act=nn.PReLU)
        self.tail = zero_init_tail(nn.Conv2d(num_features, in_channels, 9, padding=4), bicubic_skip)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.head(x)
        out = self.tail(self.upsample(h + self.body(h)))
        return out + bicubic(x, self.scale) if self.bicubic_skip else out


PARAMS = (
    Param("num_blocks", int, 8, "residual blocks B", low=1, high=32),
    Param("num_features", int, 32, "feature channels", low=4, high=256),
    Param("batch_norm", bool, False, "batch norm inside the residual blocks"),
    BICUBIC_SKIP,
)

register(ModelSpec(name="srresnet", kind="pixel", build=SRResNet, params=PARAMS,
                   summary="SRResNet: residual blocks + PReLU, pixel-shuffle upsampler"))
register(ModelSpec(name="srgan", kind="gan", build=SRResNet, params=PARAMS, discriminator="vgg_style",
                   summary="SRGAN: SRResNet generator trained against the vgg_style discriminator"))
