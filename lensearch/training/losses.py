"""Training losses: pixel losses, SSIM, the FeatureNet content loss, and the adversarial losses.

``build_generator_loss(cfg)`` turns the run configuration's ``loss`` section into a :class:`GeneratorLoss`
``(sr, hr) -> (total, parts)``. The adversarial term is added by the GAN step (it needs the
discriminator): :class:`AdversarialLoss` provides its ``d_loss`` / ``g_loss``, weighted by ``adv_weight``.
All pixel losses are means over the batch and are exactly 0 for identical inputs.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
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
    """1 - mean SSIM over images of at least 11x11 px, each image pair scaled by its *target's* range
    (:func:`lensearch.metrics.unit_scale`: the HR image's min -> 0, max -> 1, the same map for SR), so
    ``data_range = 1`` is true whatever range the normalization left (zscore, asinh and none are not in
    [0, 1]), as in the validation SSIM."""
    from lensearch.metrics import ssim, unit_scale

    sr, hr = unit_scale(sr, hr)
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


def content_space(sr: torch.Tensor, hr: torch.Tensor, normalization=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(sr, hr) as the FeatureNet sees them, the same for every trial whatever normalization it searched:
    **data units** (``normalization`` inverted), then each pair scaled by the HR image's range (HR min -> 0,
    max -> 1, the same affine map for SR; :func:`lensearch.metrics.unit_scale`) — the space the
    validation metrics use. Train FeatureNets on images scaled that way.

    ``normalization`` (a :class:`lensearch.data.transforms.Normalization`, ``None`` = images already in
    data units) is inverted with the normalised HR batch as its reference. The reference only enters a
    normalization through a per-image positive affine map (minmax), which the unit scaling removes, so the
    result equals inverting with the true raw LR batch.
    """
    from lensearch.metrics import unit_scale

    if normalization is not None:
        ref = hr.detach()
        sr, hr = normalization.invert(sr, ref), normalization.invert(hr, ref)
    return unit_scale(sr, hr)


class ContentLoss(nn.Module):
    """Mean over FeatureNet stages of the L1 distance between features of SR and HR, computed in the fixed
    space of :func:`content_space` (set :attr:`normalization` to the trial's normalization). The net is
    frozen and stays in eval mode; it follows the inputs' device."""

    def __init__(self, net: nn.Module, normalization=None):
        super().__init__()
        self.net = net.eval().requires_grad_(False)
        self.normalization = normalization

    def train(self, mode: bool = True) -> ContentLoss:
        return self  # the feature extractor never leaves eval mode

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        weight = next(self.net.parameters())
        if weight.device != sr.device:
            self.net.to(sr.device)
        sr, hr = content_space(sr, hr, self.normalization)
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

    def set_normalization(self, normalization) -> GeneratorLoss:
        """Tell the content term the trial's normalization (its inputs arrive normalised); see
        :func:`content_space`."""
        if self.content is not None:
            self.content.normalization = normalization
        return self

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        total, parts = sr.new_zeros(()), {}
        for name, weight, fn in self.terms:
            value = fn(sr, hr)
            total = total + weight * value
            parts[name] = value.detach()
        return total, parts


def build_generator_loss(cfg: dict[str, Any] | None = None, *, feature_net: nn.Module | None = None,
                         normalization=None) -> GeneratorLoss:
    """A :class:`GeneratorLoss` from the ``loss`` section (keys: :data:`LOSS_PARAMS`; errors name ``loss.<key>``).

    With ``content_weight > 0`` the FeatureNet is ``feature_net`` if given, else loaded from
    ``content_weights`` (a relative path is relative to the current directory: make it absolute on the
    driver with :func:`absolute_loss_paths` before a trial changes directory). ``normalization``: the
    trial's normalization, which the content term inverts (:func:`content_space`).
    """
    cfg = coerce_params(LOSS_PARAMS, dict(cfg or {}), "loss")
    if cfg["pixel_weight"] + cfg["ssim_weight"] + cfg["content_weight"] <= 0:
        raise UserError("loss.pixel_weight: expected pixel_weight, ssim_weight or content_weight > 0, got all 0")
    content = None
    if cfg["content_weight"] > 0:
        if feature_net is None and not cfg["content_weights"]:
            raise UserError("loss.content_weights: required when loss.content_weight > 0 "
                            "(path to FeatureNet weights, .pt), got none")
        content = ContentLoss(feature_net if feature_net is not None else load_feature_net(cfg["content_weights"]),
                              normalization)
    return GeneratorLoss(cfg, content)


def absolute_loss_paths(config: dict[str, Any], base: str | Path) -> dict[str, Any]:
    """``config`` (a run configuration) with a relative ``loss.content_weights`` made absolute against
    ``base`` (the directory the driver validated it from). Ray Tune runs each trial in its own directory,
    so a relative path that validated on the driver would not be found in any trial. Returns a new dict;
    other sections are shared."""
    loss = config.get("loss")
    if not isinstance(loss, dict) or not isinstance(loss.get("content_weights"), str) or not loss["content_weights"]:
        return config
    path = Path(loss["content_weights"]).expanduser()
    if path.is_absolute():
        return config
    return {**config, "loss": {**loss, "content_weights": str((Path(base) / path).resolve())}}


class AdversarialLoss:
    """GAN losses on discriminator logits (real > 0).

    - ``vanilla``: non-saturating GAN. D: mean of BCE(real, 1) and BCE(fake, 0); G: BCE(fake, 1).
    - ``ragan``: relativistic average GAN (ESRGAN). With D_ra(a, b) = sigmoid(a - mean(b)),
      D: mean of BCE(D_ra(real, fake), 1) and BCE(D_ra(fake, real), 0); G: the same with labels swapped.
    """

    FORMULATIONS = ("vanilla", "ragan")  # the values of loss.adversarial

    def __init__(self, formulation: str = "ragan"):
        if formulation not in self.FORMULATIONS:
            raise UserError(f"loss.adversarial: expected one of {', '.join(map(repr, self.FORMULATIONS))}, "
                            f"got {formulation!r}")
        self.formulation = formulation

    @staticmethod
    def _bce(logits: torch.Tensor, target: float) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))

    def _relative(self, real: torch.Tensor, fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.formulation == "ragan":
            return real - fake.mean(), fake - real.mean()
        return real, fake

    def d_loss(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        real, fake = self._relative(real_logits, fake_logits)
        return 0.5 * (self._bce(real, 1.0) + self._bce(fake, 0.0))

    def g_loss(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        if self.formulation == "vanilla":
            return self._bce(fake_logits, 1.0)
        real, fake = self._relative(real_logits, fake_logits)
        return 0.5 * (self._bce(real, 0.0) + self._bce(fake, 1.0))
