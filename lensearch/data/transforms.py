"""Normalizations (invertible, config-driven, torch) and augmentations (numpy, per sample).

Normalizations act on batches ``(N, C, H, W)`` on any device. ``apply(x, ref)`` / ``invert(y, ref)`` take
``ref``, the *raw LR batch*, because per-image statistics can only come from the LR input at inference::

    norm = build_normalization({"name": "asinh", "softening": "auto"}, stats=train_stats(path))
    y = model(norm.apply(lr, lr));  sr = norm.invert(y, lr)
    build_normalization(norm.state())      # the same normalization, e.g. rebuilt at export time

============  ================================================  =========================================
name          forward                                           parameters
============  ================================================  =========================================
``none``      x
``minmax``    (x - min(ref)) / (max(ref) - min(ref)), per image
``zscore``    (x - mean) / std over the LR train pixels         ``mean``, ``std`` (default: from stats)
``log``       sign(x) log1p(|x| / s)  (exact for negatives)     ``softening`` s > 0 or "auto" (stats std)
``asinh``     asinh(x / s)                                      ``softening`` s > 0 or "auto" (stats std)
============  ================================================  =========================================

Augmentations (:func:`build_augment`) act on one numpy sample ``{"lr", "hr"[, "hr_clean"]}`` with a
``numpy.random.Generator``: the same D4 element (flips, rot90) for every image of the sample — strong
lensing is statistically invariant under it — and optional Gaussian noise on the LR image only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import numpy as np
import torch

from lensearch.errors import UserError
from lensearch.typed import Invalid, Typed, boolean, checked, number, parse

__all__ = ["AUGMENT_DEFAULTS", "NORMALIZATIONS", "Augment", "AugmentSection", "D4Augment", "Normalization",
           "build_augment", "build_normalization"]

Positive = number(0, exclusive=True, finite=True, text="expected a positive number")
Finite = number(finite=True, text="expected a finite number")


def _softening(value: Any) -> float | str:
    """A positive number, or ``"auto"`` (the LR train std)."""
    if value == "auto":
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 < value < float("inf")):
        raise Invalid("expected a positive number")
    return float(value)


class NoParams(Typed):
    pass


class ZScoreParams(Typed):
    mean: Finite | None = None           # default: from the training statistics
    std: Positive | None = None


class SoftenedParams(Typed):
    softening: checked(_softening, float | str) = "auto"


def _per_image(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Reshape a per-image (N,) statistic to broadcast against x."""
    return t.reshape(-1, *([1] * (x.ndim - 1))).to(x.dtype)


class Normalization:
    """Base class. Subclasses set ``name`` and ``Params`` (their typed parameters) and implement the maps."""

    name: ClassVar[str]
    Params: ClassVar[type[Typed]] = NoParams

    def __init__(self, cfg: Typed, stats: Mapping[str, Any] | None, key: str):
        self.values: dict[str, float] = {}
        self.fit(cfg, stats or {}, key)

    def fit(self, cfg: Any, stats: Mapping[str, Any], key: str) -> None:
        """Take the validated parameters ``cfg`` and any dataset statistics; fill ``self.values``."""

    def state(self) -> dict[str, Any]:
        """JSON-serialisable; ``build_normalization(state)`` rebuilds an identical normalization."""
        return {"name": self.name, **self.values}

    def apply(self, x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        return x

    def invert(self, y: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        return y

    def __repr__(self) -> str:
        return f"Normalization({self.state()})"


class NoNorm(Normalization):
    name = "none"


class MinMax(Normalization):
    name = "minmax"

    @staticmethod
    def _lo_span(x: torch.Tensor, ref: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        flat = ref.detach().flatten(1)
        lo, hi = flat.amin(1), flat.amax(1)
        span = hi - lo
        span = torch.where(span > 0, span, torch.ones_like(span))
        return _per_image(lo, x), _per_image(span, x)

    def apply(self, x, ref):
        lo, span = self._lo_span(x, ref)
        return (x - lo) / span

    def invert(self, y, ref):
        lo, span = self._lo_span(y, ref)
        return y * span + lo


class ZScore(Normalization):
    name = "zscore"
    Params = ZScoreParams

    def fit(self, cfg, stats, key):
        for k in ("mean", "std"):
            value = getattr(cfg, k)
            if value is None:  # from the training statistics, checked as if given
                if stats.get(k) is None:
                    raise UserError(f"{key}.{k}: zscore needs the dataset statistic '{k}' (none given and no "
                                    f"training statistics available)")
                value = getattr(parse(ZScoreParams, {k: stats[k]}, key), k)
            self.values[k] = value

    def apply(self, x, ref):
        return (x - self.values["mean"]) / self.values["std"]

    def invert(self, y, ref):
        return y * self.values["std"] + self.values["mean"]


class _Softened(Normalization):
    Params = SoftenedParams

    def fit(self, cfg, stats, key):
        s = cfg.softening
        if s == "auto":
            if stats.get("std") is None:
                raise UserError(f"{key}.softening: 'auto' takes the LR train std, but no training statistics "
                                f"are available; give a positive number")
            s = parse(SoftenedParams, {"softening": stats["std"]}, key).softening
        self.values["softening"] = s


class SymLog(_Softened):
    name = "log"

    def apply(self, x, ref):
        s = self.values["softening"]
        return torch.sign(x) * torch.log1p(x.abs() / s)

    def invert(self, y, ref):
        s = self.values["softening"]
        return torch.sign(y) * s * torch.expm1(y.abs())


class Asinh(_Softened):
    name = "asinh"

    def apply(self, x, ref):
        return torch.asinh(x / self.values["softening"])

    def invert(self, y, ref):
        return torch.sinh(y) * self.values["softening"]


NORMALIZATIONS: dict[str, type[Normalization]] = {c.name: c for c in (NoNorm, MinMax, ZScore, SymLog, Asinh)}


def build_normalization(cfg: Mapping[str, Any] | str | None, stats: Mapping[str, Any] | None = None,
                        key: str = "normalization") -> Normalization:
    """Build from a name, a dict ``{"name": ..., **params}`` or a ``state()``; ``stats`` as from
    :func:`lensearch.data.store.train_stats` (``mean``, ``std`` of LR train pixels). ``key`` prefixes
    error messages (the YAML key path)."""
    if cfg is None:
        cfg = "none"
    if isinstance(cfg, str):
        cfg = {"name": cfg}
    if not isinstance(cfg, Mapping):
        raise UserError(f"{key}: expected a name or a mapping with 'name', got {cfg!r}")
    name = cfg.get("name")
    if not isinstance(name, str) or name not in NORMALIZATIONS:
        raise UserError(f"{key}.name: expected one of {', '.join(NORMALIZATIONS)}, got {name!r}")
    cls = NORMALIZATIONS[name]
    return cls(parse(cls.Params, {k: v for k, v in cfg.items() if k != "name"}, key, owner=name), stats, key)


# --------------------------------------------------------------------------------------------- augment
Augment = Callable[[dict[str, np.ndarray], np.random.Generator], dict[str, np.ndarray]]

IMAGE_KEYS = ("lr", "hr", "hr_clean")


class AugmentSection(Typed):
    """The ``augment`` section (see :func:`build_augment`)."""

    flips: boolean() = True
    rot90: boolean() = True
    lr_noise_std: number(0, finite=True, text="expected a non-negative number") = 0.0
    lr_noise_relative: boolean() = True


AUGMENT_DEFAULTS: dict[str, Any] = AugmentSection.defaults()


def build_augment(cfg: Mapping[str, Any] | None, key: str = "augment") -> Augment | None:
    """Return ``augment(sample, rng) -> sample`` or None when nothing is switched on.

    ``cfg`` keys (defaults in :data:`AUGMENT_DEFAULTS`): ``flips`` (horizontal and vertical flips),
    ``rot90`` (rotations by k*90 deg; only k = 0, 2 for non-square images so batch shapes stay fixed),
    ``lr_noise_std`` (Gaussian noise sigma added to LR only) and ``lr_noise_relative`` (sigma in units of
    each LR image's std when true, absolute otherwise). ``cfg=None`` means no augmentation.
    """
    if cfg is None:
        return None
    c = parse(AugmentSection, cfg, key)
    if not (c.flips or c.rot90 or c.lr_noise_std > 0):
        return None
    return D4Augment(c.flips, c.rot90, c.lr_noise_std, c.lr_noise_relative)


class D4Augment:
    """Picklable augmentation (DataLoader workers may be spawned); see :func:`build_augment`."""

    def __init__(self, flips: bool, rot90: bool, lr_noise_std: float, lr_noise_relative: bool):
        self.flips, self.rot90 = flips, rot90
        self.lr_noise_std, self.lr_noise_relative = lr_noise_std, lr_noise_relative

    def __call__(self, sample: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
        out = dict(sample)
        h, w = sample["lr"].shape[-2:]
        k = 0
        if self.rot90:
            k = int(rng.integers(4)) if h == w else 2 * int(rng.integers(2))
        flip_h, flip_v = (bool(rng.random() < 0.5), bool(rng.random() < 0.5)) if self.flips else (False, False)
        for name in IMAGE_KEYS:
            if name not in sample:
                continue
            img = sample[name]
            if flip_h:
                img = img[..., ::-1]
            if flip_v:
                img = img[..., ::-1, :]
            out[name] = np.ascontiguousarray(np.rot90(img, k, axes=(-2, -1)))
        if self.lr_noise_std > 0:
            lr = out["lr"]
            sigma = self.lr_noise_std * (float(lr.std()) if self.lr_noise_relative else 1.0)
            out["lr"] = (lr + sigma * rng.standard_normal(lr.shape)).astype(lr.dtype)
        return out

    def __repr__(self) -> str:
        return (f"D4Augment(flips={self.flips}, rot90={self.rot90}, lr_noise_std={self.lr_noise_std}, "
                f"lr_noise_relative={self.lr_noise_relative})")
