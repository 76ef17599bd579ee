"""Rendering a :class:`~lensearch.data.simulation.priors.Sky`: ray tracing on a supersampled grid, each
instrument's Gaussian PSF and pixel integration (see "Rendering" in docs/simulation.md)."""

from __future__ import annotations

import math
from functools import lru_cache

import lenstronomy.Util.util as lenstronomy_util
import numpy as np
from lenstronomy.ImSim.Numerics.convolution import MultiGaussianConvolution
from lenstronomy.LensModel.lens_model import LensModel
from lenstronomy.LensModel.Profiles.point_mass import PointMass

from lensearch.data.simulation.instruments import PRESETS
from lensearch.data.simulation.priors import SERSIC, Sky

__all__ = ["LR_MODES", "PSF_TRUNCATION", "PointMasses", "Renderer", "cached_renderer"]

PSF_TRUNCATION = 4.0  # Gaussian PSF truncated at this many sigma
LR_MODES = ("instrument", "degrade")


class PointMasses:
    """Deflection of many point masses, for lenstronomy's ``TABULATED_DEFLECTIONS`` profile.

    Called with keyword arrays ``theta_E``, ``x0``, ``y0`` (arcsec); sums lenstronomy's ``POINT_MASS``.
    """

    def __init__(self) -> None:
        self._profile = PointMass()

    def __call__(self, x: np.ndarray, y: np.ndarray, theta_E: np.ndarray, x0: np.ndarray,
                 y0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ax, ay = np.zeros_like(x), np.zeros_like(y)
        for t, cx, cy in zip(theta_E, x0, y0):
            dx, dy = self._profile.derivatives(x, y, t, cx, cy)
            ax += dx
            ay += dy
        return ax, ay


class Renderer:
    """Noise-free HR and LR images of a :class:`Sky` for a preset, scale and LR mode (see "Rendering" in
    docs/simulation.md)."""

    def __init__(self, preset_name: str, scale: int, lr_mode: str):
        preset = PRESETS[preset_name]
        self.hr, self.lr = preset.hr, preset.lr(scale)
        ss, s = preset.supersampling, scale
        self._fine = preset.hr_size * ss
        self._x, self._y = lenstronomy_util.make_grid(self._fine, self.hr.pixel_scale / ss)
        self._lens = LensModel(["SIE", "SHEAR", "TABULATED_DEFLECTIONS"],
                               profile_kwargs_list=[{}, {}, {"custom_class": PointMasses()}])

        def blur(fwhm: float, pixel_scale: float, factor: int) -> MultiGaussianConvolution:
            return MultiGaussianConvolution([lenstronomy_util.fwhm2sigma(fwhm)], [1.0], pixel_scale, factor, True,
                                            truncation=PSF_TRUNCATION)

        self._hr_psf = blur(self.hr.psf_fwhm, self.hr.pixel_scale, ss)
        self._degrade = lr_mode == "degrade"
        if self._degrade:
            self._lr_psf = blur(math.sqrt(self.lr.psf_fwhm**2 - self.hr.psf_fwhm**2), self.lr.pixel_scale, s)
        else:
            self._lr_psf = blur(self.lr.psf_fwhm, self.lr.pixel_scale, ss * s)

    def surface_brightness(self, sky: Sky) -> np.ndarray:
        """The sky on the fine grid: source seen through the lens (if lensed) plus lens light."""
        bx, by = self._lens.ray_shooting(self._x, self._y, sky.kwargs_lens) if sky.lensed else (self._x, self._y)
        sb = SERSIC.surface_brightness(bx, by, sky.kwargs_light[:1])
        for kwargs in sky.kwargs_light[1:]:
            sb = sb + SERSIC.surface_brightness(self._x, self._y, [kwargs])
        return sb.reshape(self._fine, self._fine)

    def render(self, sky: Sky) -> tuple[np.ndarray, np.ndarray]:
        """``(hr_clean, lr_clean)``, both in surface-brightness units."""
        fine = self.surface_brightness(sky)
        hr = self._hr_psf.re_size_convolve(None, fine)
        lr = self._lr_psf.re_size_convolve(None, hr if self._degrade else fine)
        return hr, lr


@lru_cache(maxsize=8)
def cached_renderer(preset: str, scale: int, lr_mode: str) -> Renderer:
    return Renderer(preset, scale, lr_mode)
