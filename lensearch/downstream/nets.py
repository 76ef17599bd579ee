"""The downstream networks: :class:`~lensearch.models.feature_net.FeatureNet` for every task.

The substructure classifier *is* a FeatureNet, so its trained weights serve directly as the feature network
of the SRGAN/ESRGAN content loss (``loss.content_weights``). The lens finder uses the same architecture with
two classes, the regressor with one output per lens parameter (the linear head then predicts standardised
targets; :class:`Standardizer` maps them back).

Inputs are seen the way the content loss sees images (:func:`lensearch.training.losses.content_space`):
each image scaled by its own range to [0, 1] (:func:`unit_scale_images`). That also makes the networks
independent of the file's flux units, and of any overall flux bias an SR model may introduce.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from lensearch.models.feature_net import FeatureNet

__all__ = ["DEFAULT_NET", "Standardizer", "build_net", "unit_scale_images"]

DEFAULT_NET = {"base_channels": 16, "num_stages": 3}


def build_net(outputs: int, base_channels: int = DEFAULT_NET["base_channels"],
              num_stages: int = DEFAULT_NET["num_stages"]) -> FeatureNet:
    """A single-channel FeatureNet with ``outputs`` logits (classes) or regression outputs."""
    return FeatureNet(in_channels=1, num_classes=outputs, base_channels=base_channels, num_stages=num_stages)


def unit_scale_images(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(N,1,H,W) images, each mapped so that its min is 0 and its max 1 (a constant image becomes 0)."""
    t = torch.as_tensor(np.asarray(x, dtype=np.float32)) if not isinstance(x, torch.Tensor) else x.float()
    lo = t.amin(dim=(1, 2, 3), keepdim=True)
    span = t.amax(dim=(1, 2, 3), keepdim=True) - lo
    return (t - lo) / torch.where(span > 0, span, torch.ones_like(span))


@dataclass
class Standardizer:
    """Per-column mean/std of regression targets (fitted on the training rows)."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, y: np.ndarray) -> Standardizer:
        y = np.asarray(y, dtype=np.float64)
        std = y.std(axis=0)
        return cls(y.mean(axis=0), np.where(std > 0, std, 1.0))

    def apply(self, y: np.ndarray) -> np.ndarray:
        return ((np.asarray(y, np.float64) - self.mean) / self.std).astype(np.float32)

    def invert(self, z: np.ndarray) -> np.ndarray:
        return np.asarray(z, np.float64) * self.std + self.mean
