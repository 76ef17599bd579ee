"""Imagers and presets: sampling, Gaussian PSF, depth and noise of the HR instrument and its LR twin.

See "Instruments", "Noise", "Units" and "Presets" in docs/simulation.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

__all__ = ["MU_REF", "PRESETS", "UNITS", "Instrument", "Preset"]

MU_REF = 20.0  # AB mag/arcsec^2 of a pixel value 1
UNITS = f"surface brightness relative to AB {MU_REF:g} mag/arcsec^2 (v -> {MU_REF:g} - 2.5 log10 v mag/arcsec^2)"


@dataclass(frozen=True)
class Instrument:
    """An imager: sampling, Gaussian PSF and noise. Angles in arcsec, magnitudes AB, times in s."""

    pixel_scale: float
    psf_fwhm: float
    zero_point: float  # magnitude giving 1 e-/s
    sky_brightness: float  # mag/arcsec^2
    exposure_time: float  # per exposure
    num_exposures: int
    read_noise: float  # e- per exposure

    def coarsened(self, scale: int) -> Instrument:
        """The same design with a ``scale`` times smaller aperture (see docs/simulation.md)."""
        return replace(self, pixel_scale=self.pixel_scale * scale, psf_fwhm=self.psf_fwhm * scale,
                       zero_point=self.zero_point - 5 * math.log10(scale))

    @property
    def electrons_per_unit(self) -> float:
        """Electrons collected in one pixel, over the whole stack, for surface brightness 1 (``UNITS``)."""
        t = self.exposure_time * self.num_exposures
        return 10 ** (-0.4 * (MU_REF - self.zero_point)) * self.pixel_scale**2 * t

    @property
    def background_rms(self) -> float:
        """Background noise per pixel in electrons: sky Poisson noise and read noise."""
        t = self.exposure_time * self.num_exposures
        sky = 10 ** (-0.4 * (self.sky_brightness - self.zero_point)) * self.pixel_scale**2 * t
        return math.sqrt(sky + self.num_exposures * self.read_noise**2)

    def observe(self, clean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A noisy exposure of the noise-free image ``clean`` (surface brightness in, and out)."""
        k = self.electrons_per_unit
        counts = rng.poisson(np.clip(clean, 0, None) * k) + rng.normal(0.0, self.background_rms, clean.shape)
        return counts / k

    def noise_std(self, clean: np.ndarray) -> np.ndarray:
        """Expected per-pixel noise standard deviation of :meth:`observe`, in surface-brightness units."""
        k = self.electrons_per_unit
        return np.sqrt(np.clip(clean, 0, None) * k + self.background_rms**2) / k


@dataclass(frozen=True)
class Preset:
    """A named HR image geometry and instrument; the LR instrument follows from ``scale``."""

    name: str
    hr_size: int
    hr: Instrument
    supersampling: int = 2  # ray-tracing sub-pixels per HR pixel and axis

    def lr(self, scale: int) -> Instrument:
        return self.hr.coarsened(scale)


# Instrument(pixel_scale ["/px], psf_fwhm ["], ...) of the HR images; see "Presets" in docs/simulation.md.
PRESETS: dict[str, Preset] = {p.name: p for p in (
    # DeepLenseSim Model I-like geometry and PSF; HST/ACS F814W-like depth.
    Preset("model_i", 150,
           Instrument(0.05, 0.087, zero_point=25.9, sky_brightness=22.3, exposure_time=1500.0,
                      num_exposures=8, read_noise=4.0)),
    # A 2.4 m telescope whose scale-2 LR instrument is Euclid VIS (1.2 m, ZP 25.72), Euclid Wide depth.
    Preset("model_ii", 128,
           Instrument(0.05, 0.08, zero_point=25.72 + 5 * math.log10(2), sky_brightness=22.3,
                      exposure_time=566.0, num_exposures=4, read_noise=4.2)),
    # HST WFC3/UVIS F606W-like.
    Preset("model_iii", 128,
           Instrument(0.04, 0.07, zero_point=26.1, sky_brightness=22.6, exposure_time=1200.0,
                      num_exposures=8, read_noise=3.1)),
    # Euclid VIS sampling and depth on a small field: fast, for tests and demos.
    Preset("tiny", 64,
           Instrument(0.1, 0.16, zero_point=25.72, sky_brightness=22.3, exposure_time=566.0,
                      num_exposures=4, read_noise=4.2)),
)}
