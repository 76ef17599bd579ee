"""RRDB generator (Wang et al. 2018, ESRGAN), registered as ``rrdb`` (pixel losses: ESRGAN's PSNR-oriented
model) and ``esrgan`` (the same generator trained adversarially; relativistic average loss in
:mod:`lensearch.training.losses`, against the ``vgg_style`` discriminator).

conv -> B residual-in-residual dense blocks (3 dense blocks of 5 convs, LeakyReLU 0.2, residual scaling
beta) -> conv + long skip -> (nearest x2 + conv + LeakyReLU) stages -> conv + LeakyReLU -> conv.
No batch norm. Dense-block convs start at 0.1x Kaiming init (as in ESRGAN). Optional global skip over
bicubic(LR), with the last conv starting at zero (the untrained model is exactly bicubic). Fully
convolutional: any input size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lensearch.models.common import BICUBIC_SKIP, bicubic, check_scale, conv3, zero_init_tail
from lensearch.models.registry import ModelSpec, Param, register


class DenseBlock5(nn.Module):
    def __init__(self, features: int, growth: int, beta: float):
        super().__init__()
        self.beta = beta
        self.convs = nn.ModuleList(conv3(features + i * growth, growth if i < 4 else features) for i in range(5))
        for conv in self.convs:
            nn.init.kaiming_normal_(conv.weight, a=0.2)
            conv.weight.data.mul_(0.1)
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = x
        for conv in self.convs[:-1]:
            feats = torch.cat([feats, F.leaky_relu(conv(feats), 0.2)], 1)
        return x + self.beta * self.convs[-1](feats)


class RRDB(nn.Module):
    def __init__(self, features: int, growth: int, beta: float):
        super().__init__()
        self.beta = beta
        self.body = nn.Sequential(*(DenseBlock5(features, growth, beta) for _ in range(3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.beta * self.body(x)


class RRDBNet(nn.Module):
    def __init__(self, scale: int = 2, in_channels: int = 1, num_blocks: int = 3, num_features: int = 32,
                 growth: int = 16, res_scale: float = 0.2, bicubic_skip: bool = True):
        super().__init__()
        self.scale, self.bicubic_skip = check_scale(scale), bicubic_skip
        self.factors = [3] if scale == 3 else [2] * (scale.bit_length() - 1)
        self.head = conv3(in_channels, num_features)
        self.body = nn.Sequential(*(RRDB(num_features, growth, res_scale) for _ in range(num_blocks)),
                                  conv3(num_features, num_features))
        self.up_convs = nn.ModuleList(conv3(num_features, num_features) for _ in self.factors)
        self.hr_conv = conv3(num_features, num_features)
        self.tail = zero_init_tail(conv3(num_features, in_channels), bicubic_skip)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.head(x)
        h = h + self.body(h)
        for f, conv in zip(self.factors, self.up_convs):
            h = F.leaky_relu(conv(F.interpolate(h, scale_factor=f, mode="nearest")), 0.2)
        out = self.tail(F.leaky_relu(self.hr_conv(h), 0.2))
        return out + bicubic(x, self.scale) if self.bicubic_skip else out


PARAMS = (
    Param("num_blocks", int, 3, "RRDB blocks", low=1, high=32),
    Param("num_features", int, 32, "feature channels", low=4, high=256),
    Param("growth", int, 16, "growth channels inside each dense block", low=4, high=128),
    Param("res_scale", float, 0.2, "residual scaling beta", low=0.0, high=1.0),
    BICUBIC_SKIP,
)

register(ModelSpec(name="rrdb", kind="pixel", build=RRDBNet, params=PARAMS,
                   summary="RRDBNet (ESRGAN generator) trained with pixel losses (ESRGAN's PSNR-oriented model)"))
register(ModelSpec(name="esrgan", kind="gan", build=RRDBNet, params=PARAMS, discriminator="vgg_style",
                   summary="ESRGAN: RRDB generator, relativistic average GAN vs the vgg_style discriminator"))
