"""A plain ESPCN/FSRCNN-class network: the small, fast CPU baseline.

After Shi et al. 2016, "Real-Time Single Image and Video Super-Resolution Using an Efficient Sub-Pixel
Convolutional Neural Network" (ESPCN: all convolutions at LR resolution, one sub-pixel convolution to HR),
and Dong et al. 2016, "Accelerating the Super-Resolution Convolutional Neural Network" (FSRCNN: a thin,
deep-ish LR-resolution stack with PReLU).

``num_layers`` 3x3 convs in total at LR resolution: conv(in -> F) + act, ``num_layers - 2`` x
(conv(F -> F) + act), then conv(F -> in * scale^2) + PixelShuffle(scale) to HR, added to bicubic(LR).
That is what a plain 50-line PyTorch SR script does ("6 convs with a bicubic skip and a zero-initialised
tail"), and it is the yardstick the heavier models must beat at equal compute.

Simplified / changed from the papers: no 5x5 first layer and tanh (ESPCN) nor FSRCNN's shrink / map /
expand 1x1 layers and HR-resolution deconvolution: all convs are 3x3 with one width; a single sub-pixel
conv for every scale (x4 is one PixelShuffle(4), not two x2 stages); the network predicts the residual
over bicubic(LR) (``bicubic_skip``), with the sub-pixel conv starting at zero so the untrained model is
exactly bicubic. Fully convolutional: any input size.
"""

from __future__ import annotations

import torch
from torch import nn

from lensearch.models.common import BICUBIC_SKIP, bicubic, check_scale, conv3, zero_init_tail
from lensearch.models.registry import ModelSpec, Param, register

ACTIVATIONS = {"relu": lambda f: nn.ReLU(inplace=True), "prelu": lambda f: nn.PReLU(f),
               "lrelu": lambda f: nn.LeakyReLU(0.1, inplace=True)}


class ESPCN(nn.Module):
    def __init__(self, scale: int = 2, in_channels: int = 1, num_features: int = 32, num_layers: int = 6,
                 activation: str = "relu", bicubic_skip: bool = True):
        super().__init__()
        self.scale, self.bicubic_skip = check_scale(scale), bicubic_skip
        act = ACTIVATIONS[activation]
        layers: list[nn.Module] = [conv3(in_channels, num_features), act(num_features)]
        for _ in range(num_layers - 2):
            layers += [conv3(num_features, num_features), act(num_features)]
        self.body = nn.Sequential(*layers)
        self.tail = zero_init_tail(conv3(num_features, in_channels * scale * scale), bicubic_skip)
        self.shuffle = nn.PixelShuffle(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.shuffle(self.tail(self.body(x)))
        return out + bicubic(x, self.scale) if self.bicubic_skip else out


register(ModelSpec(
    name="espcn", kind="pixel", build=ESPCN,
    params=(
        Param("num_features", int, 32, "feature channels of every LR-resolution conv", low=4, high=256),
        Param("num_layers", int, 6, "3x3 convs in total, the sub-pixel output conv included", low=2, high=32),
        Param("activation", str, "relu", "activation after each conv but the last", choices=tuple(ACTIVATIONS)),
        BICUBIC_SKIP,
    ),
    summary="FSRCNN/ESPCN-class baseline: plain 3x3 conv stack at LR resolution, one sub-pixel conv to HR",
))
