"""A trained network as it is applied to real images: rebuilt from a checkpoint, wrapped in its normalization.

:func:`load_network` rebuilds the bare network of a training checkpoint with the weights to evaluate;
:class:`RawImageSR` wraps it in the trial's normalization (applied to the raw LR input, inverted on the
output), which is what ``lensearch export`` traces into TorchScript and ONNX.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["RawImageSR", "load_network"]


class RawImageSR(torch.nn.Module):
    """``net`` wrapped in its normalization: raw LR images in, SR images in the same units out."""

    def __init__(self, net: torch.nn.Module, norm):
        super().__init__()
        self.net, self.norm = net, norm

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        return self.norm.invert(self.net(self.norm.apply(lr, lr)), lr)


def load_network(ckpt: dict[str, Any]) -> torch.nn.Module:
    """The bare network of a checkpoint, with the weights to evaluate (``eval_model``: EMA when enabled)."""
    from lensearch.models import registry

    net = registry.build(ckpt["model_name"], scale=ckpt["scale"], in_channels=ckpt["in_channels"],
                         **ckpt["model_params"])
    net.load_state_dict(ckpt["eval_model"])
    return net.eval()
