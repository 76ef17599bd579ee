"""FeatureNet: a small single-channel lensing classifier whose intermediate features drive the content loss.

No ImageNet network: the project trains this on its own lensing images (e.g. the DeepLense classes no
substructure / subhalo / vortex) and the content loss compares its features of SR and HR images. It is
saved with :func:`save_feature_net` (config + state dict) and read back with :func:`load_feature_net`,
which also accepts a bare state dict of a default-configured net.

Architecture: ``num_stages`` stages of (3x3 conv-BN-ReLU) x 2, each stage after the first preceded by 2x2
max pooling, channels ``base_channels * 2**i``; global average pooling -> linear -> class logits.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from lensearch.errors import UserError


def _conv_bn_relu(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class FeatureNet(nn.Module):
    def __init__(self, in_channels: int = 1, num_classes: int = 3, base_channels: int = 16, num_stages: int = 3):
        super().__init__()
        self.config = {"in_channels": in_channels, "num_classes": num_classes,
                       "base_channels": base_channels, "num_stages": num_stages}
        self.stages = nn.ModuleList()
        ch = in_channels
        for i in range(num_stages):
            out = base_channels * 2 ** i
            pool = [nn.MaxPool2d(2, ceil_mode=True)] if i else []
            self.stages.append(nn.Sequential(*pool, *_conv_bn_relu(ch, out), *_conv_bn_relu(out, out)))
            ch = out
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(ch, num_classes))

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """(N, C, H, W) -> (features after each stage, class logits (N, num_classes))."""
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats, self.head(x)


def save_feature_net(net: FeatureNet, path: str | Path) -> None:
    """Write ``{"config": ..., "state_dict": ...}`` (what :func:`load_feature_net` reads)."""
    torch.save({"config": net.config, "state_dict": net.state_dict()}, path)


def load_feature_net(path: str | Path, where: str = "loss.content_weights") -> FeatureNet:
    """A FeatureNet from a file of :func:`save_feature_net` or a bare state dict (default config).

    Errors name ``where`` and the path: missing file, unreadable file, or weights whose keys/shapes do not
    fit the configured architecture.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{where}: FeatureNet weights file not found: {path}")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is the user's input
        raise UserError(f"{where}: cannot read {path} as a torch file ({type(err).__name__}: {err})") from err
    if not isinstance(blob, dict):
        raise UserError(f"{where}: {path} holds a {type(blob).__name__}, expected a FeatureNet state dict")
    config, state = (blob.get("config", {}), blob["state_dict"]) if "state_dict" in blob else ({}, blob)
    try:
        net = FeatureNet(**config)
        net.load_state_dict(state)
    except (TypeError, RuntimeError) as err:
        first = str(err).strip().splitlines()
        detail = " ".join(first[1:3]) if len(first) > 1 else first[0]
        raise UserError(f"{where}: {path} does not fit FeatureNet({config or 'defaults'}): {detail}") from err
    return net
