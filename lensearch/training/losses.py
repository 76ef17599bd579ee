"""Training losses: pixel losses, SSIM, the FeatureNet content loss, and the adversarial losses.

``build_generator_loss(cfg)`` turns the run configuration's ``loss`` section into a :class:`GeneratorLoss`
``(sr, hr) -> (total, parts)``. The adversarial term is added by the GAN step (it needs the
discriminator): :class:`AdversarialLoss` provides its ``d_loss`` / ``g_loss``, weighted by ``adv_weight``.
All pixel losses are means over the batch and are exactly 0 for identical inputs.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from lensearch.errors import UserError
from lensearch.models.feature_net import load_feature_net
from lensearch.models.registry import Param, coerce_params


def l1(sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
    return F.l1_loss(sr, hr)


def mse(sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(sr, hr)


def charbonnier(sr: torch.Tensor, hr: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """mean(sqrt(d^2 + eps^2) - eps): a smooth L1 (shifted by eps so identical inputs give 0)."""
    return (torch.sqrt((sr - hr) ** 2 + eps * eps) - eps).mean()


def ssim_loss(sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
    """1 - mean SSIM (data_range 1: images as the normalization left them; at least 11x11 px)."""
    from lensearch.metrics import ssim

    return 1 - ssim(sr, hr, data_range=1.0).mean()


PIXEL_LOSSES: dict[str, Callable[..., torch.Tensor]] = {"l1": l1, "mse": mse, "charbonnier": charbonnier}

LOSS_PARAMS = (
    Param("pixel", str, "l1", "pixel loss", choices=tuple(PIXEL_LOSSES)),
    Param("pixel_weight", float, 1.0, "weight of the pixel loss", low=0.0),
    Param("charbonnier_eps", float, 1e-3, "eps of the Charbonnier loss", low=1e-12),
    Param("ssim_weight", float, 0.0, "weight of 1 - SSIM", low=0.0),
    Param("content_weight", float, 0.0, "weight of the FeatureNet content (L1 feature) loss", low=0.0),
    Param("content_weights", str, "", "FeatureNet weights file (.pt); required when content_weight > 0"),
    Param("adv_weight", float, 5e-3, "weight of the adversarial generator loss (GAN models only)", low=0.0),
    Param("adversarial", str, "ragan", "adversarial loss of GAN models", choices=("ragan", "vanilla")),
)


class ContentLoss(nn.Module):
    """Mean over FeatureNet stages of the L1 distance between features of SR and HR. The net is frozen
    and stays in eval mode; it follows the inputs' device."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> ContentLoss:
        return self  # the feature extractor never leaves eval mode

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        weight = next(self.net.parameters())
        if weight.device != sr.device:
            self.net.to(sr.device)
        with torch.no_grad():
            target, _ = self.net(hr)
        feats, _ = self.net(sr)
        return torch.stack([F.l1_loss(f, t) for f, t in zip(feats, target)]).mean()


class GeneratorLoss(nn.Module):
    """Weighted sum of pixel, SSIM and content losses. ``__call__(sr, hr) -> (total, parts)``, where
    ``parts`` maps each active term (weight > 0: ``pixel``, ``ssim``, ``content``) to its unweighted,
    detached value. ``adv_weight`` / ``adversarial`` are kept for the GAN step, which adds that term."""

    def __init__(self, cfg: dict[str, Any], content: ContentLoss | None = None):
        super().__init__()
        self.adv_weight, self.adversarial = cfg["adv_weight"], cfg["adversarial"]
        pixel = PIXEL_LOSSES[cfg["pixel"]]
        if pixel is charbonnier:
            pixel = partial(charbonnier, eps=cfg["charbonnier_eps"])
        self.content = content
        self.terms: list[tuple[str, float, Callable]] = [
            (name, weight, fn) for name, weight, fn in (
                ("pixel", cfg["pixel_weight"], pixel),
                ("ssim", cfg["ssim_weight"], ssim_loss),
                ("content", cfg["content_weight"], content),
            ) if weight > 0]

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        total, parts = sr.new_zeros(()), {}
        for name, weight, fn in self.terms:
            value = fn(sr, hr)
            total = total + weight * value
            parts[name] = value.detach()
        return total, parts


def build_generator_loss(cfg: dict[str, Any] | None = None, *, feature_net: nn.Module | None = None) -> GeneratorLoss:
    """A :class:`GeneratorLoss` from the ``loss`` section (keys: :data:`LOSS_PARAMS`; errors name ``loss.<key>``).

    With ``content_weight > 0`` the FeatureNet is ``feature_net`` if given, else loaded from
    ``content_weights``.
    """
    cfg = coerce_params(LOSS_PARAMS, dict(cfg or {}), "loss")
    if cfg["pixel_weight"] + cfg["ssim_weight"] + cfg["content_weight"] <= 0:
        raise UserError("loss.pixel_weight: expected pixel_weight, ssim_weight or content_weight > 0, got all 0")
    content = None
    if cfg["content_weight"] > 0:
        if feature_net is None and not cfg["content_weights"]:
            raise UserError("loss.content_weights: required when loss.content_weight > 0 "
                            "(path to FeatureNet weights, .pt), got none")
        content = ContentLoss(feature_net if feature_net is not None else load_feature_net(cfg["content_weights"]))
    return GeneratorLoss(cfg, content)


class AdversarialLoss:
    """GAN losses on discriminator logits (real > 0).

    - ``vanilla``: non-saturating GAN. D: mean of BCE(real, 1) and BCE(fake, 0); G: BCE(fake, 1).
    - ``ragan``: relativistic average GAN (ESRGAN). With D_ra(a, b) = sigmoid(a - mean(b)),
      D: mean of BCE(D_ra(real, fake), 1) and BCE(D_ra(fake, real), 0); G: the same with labels swapped.
    """

    KINDS = ("vanilla", "ragan")

    def __init__(self, kind: str = "ragan"):
        if kind not in self.KINDS:
            raise UserError(f"loss.adversarial: expected one of {', '.join(map(repr, self.KINDS))}, got {kind!r}")
        self.kind = kind

    @staticmethod
    def _bce(logits: torch.Tensor, target: float) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))

    def _relative(self, real: torch.Tensor, fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.kind == "ragan":
            return real - fake.mean(), fake - real.mean()
        return real, fake

    def d_loss(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        real, fake = self._relative(real_logits, fake_logits)
        return 0.5 * (self._bce(real, 1.0) + self._bce(fake, 0.0))

    def g_loss(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        if self.kind == "vanilla":
            return self._bce(fake_logits, 1.0)
        real, fake = self._relative(real_logits, fake_logits)
        return 0.5 * (self._bce(real, 0.0) + self._bce(fake, 1.0))
