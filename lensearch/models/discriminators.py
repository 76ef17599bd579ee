"""Discriminators for the GAN models (second registry: :func:`registry.build_discriminator`).

``vgg_style``: the SRGAN/ESRGAN discriminator made size-agnostic. ``num_stages`` stages of
(3x3 conv stride 1, 3x3 conv stride 2), LeakyReLU 0.2, channels ``base_channels * 2**i`` (capped at 8x),
then global average pooling and a two-layer dense head -> one logit per image. Because of the pooling it
works at any patch size (each stride-2 conv maps n px to ceil(n/2) >= 1). The first conv has no
normalization, as in SRGAN.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from lensearch.models.registry import ModelSpec, Param, register_discriminator


def _conv_block(cin: int, cout: int, stride: int, norm: str) -> list[nn.Module]:
    conv = nn.Conv2d(cin, cout, 3, stride, padding=1, bias=norm != "batch")
    if norm == "spectral":
        conv = spectral_norm(conv)
    layers: list[nn.Module] = [conv]
    if norm == "batch":
        layers.append(nn.BatchNorm2d(cout))
    return layers + [nn.LeakyReLU(0.2, inplace=True)]


class VGGStyleDiscriminator(nn.Module):
    def __init__(self, in_channels: int = 1, base_channels: int = 32, num_stages: int = 4,
                 norm: str = "batch"):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, base_channels, 3, padding=1),
                                   nn.LeakyReLU(0.2, inplace=True)]
        layers += _conv_block(base_channels, base_channels, 2, norm)
        ch = base_channels
        for i in range(1, num_stages):
            out = base_channels * 2 ** min(i, 3)
            layers += _conv_block(ch, out, 1, norm) + _conv_block(out, out, 2, norm)
            ch = out
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(ch, 2 * ch),
                                  nn.LeakyReLU(0.2, inplace=True), nn.Linear(2 * ch, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N,) logits (real > 0)."""
        return self.head(self.features(x)).squeeze(1)


register_discriminator(ModelSpec(
    name="vgg_style", kind="discriminator", build=VGGStyleDiscriminator,
    params=(
        Param("base_channels", int, 32, "channels of the first stage (doubling per stage, capped at 8x)",
              low=4, high=256),
        Param("num_stages", int, 4, "stride-2 stages (each halves the patch)", low=1, high=8),
        Param("norm", str, "batch", "normalization after each conv but the first",
              choices=("batch", "spectral", "none")),
    ),
    summary="VGG-style conv discriminator with global average pooling (any patch size), one logit per image",
))
