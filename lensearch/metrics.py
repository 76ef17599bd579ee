"""Image-quality metrics on float images (torch, batched).

All functions take ``(N, C, H, W)`` floating tensors on any device and return one value per image, shape
``(N,)``. The project's convention (docs/architecture.md): metrics are computed after :func:`unit_scale`,
which maps each *reference* image's min to 0 and max to 1 (the same map is applied to the prediction), with
``data_range = 1``. :func:`evaluate` does exactly that; :class:`MetricSums` accumulates it over batches and
across DDP workers.

SSIM follows Wang et al. (2004) with a Gaussian window of 11 taps, sigma 1.5, K1 = 0.01, K2 = 0.03 and
population (not sample) covariances, averaged over the 'valid' region — identical to scikit-image's
``structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False)``. It is
differentiable and can serve as a loss (``1 - ssim(pred, ref).mean()``); half-precision inputs are computed
in float32. Images smaller than 11 px on a
side have no valid region: :func:`ssim` raises :class:`~lensearch.errors.UserError` for them.

PSNR clamps the MSE at ``1e-10 * data_range**2`` so a perfect prediction gives 100 dB instead of ``inf``
(an ``inf`` would poison epoch means).
"""

from __future__ import annotations

import functools

from collections.abc import Iterable, Mapping

import torch
import torch.nn.functional as F

from lensearch.errors import UserError

__all__ = ["METRIC_NAMES", "MetricSums", "evaluate", "mse", "psnr", "ssim", "unit_scale"]

METRIC_NAMES = ("psnr", "ssim", "mse")

SSIM_WIN = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03
_MSE_FLOOR = 1e-10


def _check_pair(pred: torch.Tensor, ref: torch.Tensor) -> None:
    if pred.shape != ref.shape or pred.ndim != 4:
        raise ValueError(f"metrics expect two (N,C,H,W) tensors of one shape, got {tuple(pred.shape)} "
                         f"and {tuple(ref.shape)}")


def mse(pred: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Mean squared error per image, shape (N,)."""
    _check_pair(pred, ref)
    return (pred - ref).pow(2).flatten(1).mean(1)


def psnr(pred: torch.Tensor, ref: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per image, ``10 log10(data_range^2 / mse)``, capped at 100 dB."""
    err = mse(pred, ref).clamp_min(_MSE_FLOOR * data_range**2)
    return 10.0 * torch.log10(data_range**2 / err)


@functools.lru_cache(maxsize=16)
def _gaussian_window(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The normalised 1-D Gaussian (built once per dtype and device, not on every SSIM call)."""
    x = torch.arange(SSIM_WIN, dtype=torch.float64) - (SSIM_WIN - 1) / 2
    g = torch.exp(-0.5 * (x / SSIM_SIGMA) ** 2)
    return (g / g.sum()).to(dtype=dtype, device=device)


def _blur(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian filter, 'valid' region only; x is (B, 1, H, W)."""
    x = F.conv2d(x, g.view(1, 1, 1, -1))
    return F.conv2d(x, g.view(1, 1, -1, 1))


def ssim(pred: torch.Tensor, ref: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Structural similarity per image (mean over channels and the valid region), shape (N,)."""
    _check_pair(pred, ref)
    if pred.dtype in (torch.float16, torch.bfloat16):  # variances cancel badly in half precision
        pred = pred.float()
    ref = ref.to(pred.dtype)
    n, c, h, w = pred.shape
    if h < SSIM_WIN or w < SSIM_WIN:
        raise UserError(f"SSIM needs images of at least {SSIM_WIN}x{SSIM_WIN} px (Gaussian window "
                        f"{SSIM_WIN}), got {h}x{w}")
    g = _gaussian_window(pred.dtype, pred.device)
    x = pred.reshape(n * c, 1, h, w)
    y = ref.reshape(n * c, 1, h, w)
    # One conv pass over the five maps stacked along the batch axis.
    mu_x, mu_y, xx, yy, xy = _blur(torch.cat([x, y, x * x, y * y, x * y]), g).chunk(5)
    var_x = xx - mu_x * mu_x
    var_y = yy - mu_y * mu_y
    cov = xy - mu_x * mu_y
    c1 = (SSIM_K1 * data_range) ** 2
    c2 = (SSIM_K2 * data_range) ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return s.reshape(n, -1).mean(1)


def unit_scale(pred: torch.Tensor, ref: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply the affine map sending each ref image's min to 0 and max to 1 to both tensors.

    A constant reference image (max == min) is only shifted (scale 1), so it maps to all zeros.
    """
    _check_pair(pred, ref)
    lo = ref.detach().amin(dim=(1, 2, 3), keepdim=True)
    span = ref.detach().amax(dim=(1, 2, 3), keepdim=True) - lo
    span = torch.where(span > 0, span, torch.ones_like(span))
    return (pred - lo) / span, (ref - lo) / span


@torch.no_grad()
def evaluate(pred: torch.Tensor, ref: torch.Tensor) -> dict[str, torch.Tensor]:
    """``{"psnr", "ssim", "mse"}`` per image (N,) on unit-scaled images (the project's convention)."""
    if not pred.is_floating_point():
        pred = pred.float()
    ref = ref.to(pred.dtype)
    p, r = unit_scale(pred, ref)
    return {"psnr": psnr(p, r), "ssim": ssim(p, r), "mse": mse(p, r)}


class MetricSums:
    """Running sums and counts of per-image metrics.

    ``update(pred, ref)`` adds :func:`evaluate`'s values; ``add`` adds precomputed per-image values. To
    combine DDP workers, all-reduce (SUM) ``as_tensor()`` and read it back with ``load_tensor`` (or
    ``MetricSums.from_tensor``); every worker must use the same ``names`` in the same order::

        sums = MetricSums(["psnr", "ssim", "mse", "psnr_clean", "ssim_clean", "mse_clean"])
        sums.update(pred, hr); sums.update(pred, hr_clean, suffix="_clean")
        t = sums.as_tensor(device); dist.all_reduce(t); sums.load_tensor(t); sums.means()
    """

    def __init__(self, names: Iterable[str] = METRIC_NAMES):
        self.names = tuple(names)
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"duplicate metric names: {self.names}")
        self.sums = {k: 0.0 for k in self.names}
        self.counts = {k: 0 for k in self.names}

    def add(self, values: Mapping[str, torch.Tensor]) -> None:
        for k, v in values.items():
            if k not in self.sums:
                raise KeyError(f"metric {k!r} is not one of {self.names}")
            v = v.detach().reshape(-1)
            self.sums[k] = self.sums[k] + v.double().sum()  # stays on v's device: no sync per batch
            self.counts[k] += v.numel()

    def update(self, pred: torch.Tensor, ref: torch.Tensor, suffix: str = "") -> dict[str, torch.Tensor]:
        """Evaluate ``pred`` against ``ref``, add under ``name + suffix``, return the per-image values."""
        values = evaluate(pred, ref)
        self.add({k + suffix: v for k, v in values.items()})
        return values

    def as_tensor(self, device: torch.device | str | None = None) -> torch.Tensor:
        """float64 tensor ``[sum_0 .. sum_k-1, count_0 .. count_k-1]`` (all-reduce with SUM)."""
        vals = [torch.as_tensor(self.sums[k], dtype=torch.float64, device=device) for k in self.names]
        vals += [torch.tensor(float(self.counts[k]), dtype=torch.float64, device=device) for k in self.names]
        return torch.stack(vals)

    def load_tensor(self, t: torch.Tensor) -> MetricSums:
        vals = t.detach().double().cpu().tolist()
        k = len(self.names)
        if len(vals) != 2 * k:
            raise ValueError(f"expected a tensor of {2 * k} values for {self.names}, got {len(vals)}")
        self.sums = dict(zip(self.names, vals[:k]))
        self.counts = {n: int(round(c)) for n, c in zip(self.names, vals[k:])}
        return self

    @classmethod
    def from_tensor(cls, t: torch.Tensor, names: Iterable[str] = METRIC_NAMES) -> MetricSums:
        return cls(names).load_tensor(t)

    def means(self, prefix: str = "") -> dict[str, float]:
        """``{prefix + name: mean}``; NaN for a metric that received no values."""
        return {prefix + k: (float(self.sums[k]) / self.counts[k] if self.counts[k] else float("nan"))
                for k in self.names}

    def __repr__(self) -> str:
        return f"MetricSums({self.means()}, counts={self.counts})"
