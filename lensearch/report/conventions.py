"""SSIM in two conventions, so the report's numbers can be set beside published tables.

* **Gaussian 11/1.5** — the project's :func:`lensearch.metrics.ssim` (Wang et al. 2004: Gaussian window of 11
  taps, sigma 1.5, population covariances), which every search metric uses.
* **scikit-image default** — :func:`ssim_uniform7`, ``skimage.metrics.structural_similarity(x, y,
  data_range=...)`` with its defaults: a 7x7 *uniform* window, *sample* covariances (divided by 48, not 49),
  K1 = 0.01, K2 = 0.03, averaged over the pixels at least 3 px from every edge (the region where the window
  fits). Published DeepLense SSIM figures use this one. Implemented here in torch (no runtime dependency on
  scikit-image); ``tests/test_report_conventions.py`` checks it against scikit-image.

Both are computed on images after :func:`lensearch.metrics.unit_scale` (reference HR mapped to [0, 1],
``data_range = 1``) in the report, as every project metric is.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from lensearch.errors import UserError
from lensearch.metrics import ssim as ssim_gaussian
from lensearch.metrics import unit_scale

__all__ = ["SSIM_CONVENTIONS", "ssim_both", "ssim_uniform7"]

UNIFORM_WIN = 7
K1, K2 = 0.01, 0.03
SSIM_CONVENTIONS = {
    "ssim": "SSIM, Gaussian window 11 px, sigma 1.5, population covariance (the project's; Wang et al. 2004)",
    "ssim_skimage": "SSIM, scikit-image default: uniform 7x7 window, sample covariance (published DeepLense tables)",
}


def _as_nchw(x: torch.Tensor | np.ndarray) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    if t.ndim == 2:
        t = t[None, None]
    elif t.ndim == 3:
        t = t[None]
    if t.ndim != 4:
        raise ValueError(f"expected (H,W), (C,H,W) or (N,C,H,W), got shape {tuple(t.shape)}")
    return t.to(torch.float64)


def ssim_uniform7(pred: torch.Tensor | np.ndarray, ref: torch.Tensor | np.ndarray,
                  data_range: float = 1.0) -> torch.Tensor:
    """SSIM in scikit-image's default convention (module docstring), one value per image, shape (N,).

    Accepts (H,W), (C,H,W) or (N,C,H,W) arrays or tensors (computed in float64); channels are averaged, as
    scikit-image does with ``channel_axis``. ``data_range`` is the dynamic range used for C1 and C2.
    """
    x, y = _as_nchw(pred), _as_nchw(ref)
    if x.shape != y.shape:
        raise ValueError(f"shapes differ: {tuple(x.shape)} vs {tuple(y.shape)}")
    n, c, h, w = x.shape
    if h < UNIFORM_WIN or w < UNIFORM_WIN:
        raise UserError(f"SSIM (uniform {UNIFORM_WIN}x{UNIFORM_WIN} window) needs images of at least "
                        f"{UNIFORM_WIN}x{UNIFORM_WIN} px, got {h}x{w}")
    x, y = x.reshape(n * c, 1, h, w), y.reshape(n * c, 1, h, w)
    maps = F.avg_pool2d(torch.cat([x, y, x * x, y * y, x * y]), UNIFORM_WIN, stride=1)  # 'valid' region
    ux, uy, uxx, uyy, uxy = maps.chunk(5)
    npix = UNIFORM_WIN * UNIFORM_WIN
    cov_norm = npix / (npix - 1)  # sample covariance
    vx, vy, vxy = cov_norm * (uxx - ux * ux), cov_norm * (uyy - uy * uy), cov_norm * (uxy - ux * uy)
    c1, c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.reshape(n, -1).mean(1)


@torch.no_grad()
def ssim_both(pred: torch.Tensor, ref: torch.Tensor) -> dict[str, torch.Tensor]:
    """``{"ssim": Gaussian 11/1.5, "ssim_skimage": uniform 7x7}`` per image on unit-scaled (N,C,H,W) images
    (the project's convention: ``ref`` mapped to [0, 1], ``data_range = 1``)."""
    p, r = unit_scale(pred.to(torch.float64), ref.to(torch.float64))
    return {"ssim": ssim_gaussian(p, r), "ssim_skimage": ssim_uniform7(p, r)}
