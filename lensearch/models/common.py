"""Building blocks shared by the architectures: padding, bicubic skip, upsamplers, common params.

Everything here is written so ``torch.jit.trace`` and ``torch.onnx.export`` (dynamic H/W) keep working:
sizes flow through tensor shapes, never through Python branches on them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lensearch.errors import UserError
from lensearch.models.registry import Param

SCALES = (2, 3, 4, 8)

BICUBIC_SKIP = Param("bicubic_skip", bool, True,
                     "add bicubic(LR) to the output, so the network learns the residual over bicubic "
                     "(the last conv then starts at zero: the untrained model is exactly bicubic)")


def check_scale(scale: int, allowed: tuple[int, ...] = SCALES) -> int:
    if scale not in allowed:
        raise UserError(f"scale: expected one of {', '.join(map(str, allowed))}, got {scale!r}")
    return scale


def bicubic(x: torch.Tensor, scale: int) -> torch.Tensor:
    """Bicubic upsampling, ``align_corners=False`` (the baseline every model is compared with)."""
    return F.interpolate(x, scale_factor=scale, mode="bicubic", align_corners=False)


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad H and W at the bottom/right up to a multiple of ``multiple``.

    Reflect padding, continued by edge replication when the image is smaller than the padding needs
    (reflect cannot pad by more than size - 1).
    """
    h, w = x.shape[-2:]
    # multiple * ceil(n / multiple) - n rather than (-n) % multiple: torch.export then sees the padded
    # size as a plain multiple, which keeps its symbolic-shape reasoning cheap.
    ph = multiple * ((h + multiple - 1) // multiple) - h
    pw = multiple * ((w + multiple - 1) // multiple) - w
    rh, rw = _size_min(ph, h - 1), _size_min(pw, w - 1)
    x = F.pad(x, (0, rw, 0, rh), mode="reflect")
    return F.pad(x, (0, pw - rw, 0, ph - rh), mode="replicate")


def _size_min(a, b):
    """min of two sizes: ints (eager), SymInts (torch.export) or 0-dim tensors (torch.jit.trace)."""
    return torch.minimum(a, b) if isinstance(a, torch.Tensor) else torch.sym_min(a, b)


def pixel_shuffle_upsampler(channels: int, scale: int, act: type[nn.Module] | None = None) -> nn.Sequential:
    """conv -> PixelShuffle stages (x2 repeated, or one x3) keeping ``channels``, each optionally + ``act``."""
    check_scale(scale)
    factors = [3] if scale == 3 else [2] * (scale.bit_length() - 1)
    layers: list[nn.Module] = []
    for f in factors:
        layers += [nn.Conv2d(channels, channels * f * f, 3, padding=1), nn.PixelShuffle(f)]
        if act is not None:
            layers.append(act())
    return nn.Sequential(*layers)


def zero_init_tail(conv: nn.Conv2d, bicubic_skip: bool) -> nn.Conv2d:
    """Zero ``conv``'s weight and bias when ``bicubic_skip``: the residual starts at 0, the model at bicubic.

    Training still reaches the body: the first step gives the tail a non-zero gradient (its input features
    are non-zero) and moves it off zero; from the second step on the body's gradients flow through it.
    """
    if bicubic_skip:
        nn.init.zeros_(conv.weight)
        if conv.bias is not None:
            nn.init.zeros_(conv.bias)
    return conv


def conv3(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, padding=1)
