"""Simulated strong-lensing image pairs (HR, LR) with lenstronomy, seeded and reproducible.

Each image is a galaxy-galaxy strong lens observed by two instruments: a high-resolution (HR) one and a
low-resolution (LR) one that sees the *same sky* with ``scale`` times larger pixels. One row of the output
is ``hr`` (noisy), ``hr_clean`` (noise-free), ``lr``, ``label`` and ``params`` (see docs/architecture.md).

Physics
-------
*Cosmology.* Flat LambdaCDM, H0 = 70 km/s/Mpc, Omega_m = 0.3 (astropy), lens at z_l = 0.5, source at
z_s = 1.0. Masses are converted to Einstein radii with angular-diameter distances,
``theta_E(M) = sqrt(M / (pi Sigma_crit))`` (lenstronomy ``LensCosmo``); for these redshifts a point mass
of 1e10 Msun has theta_E ~ 0.17".

*Main deflector.* Singular isothermal ellipsoid (``SIE``) with theta_E ~ U(0.8", 1.6"), axis ratio
q ~ U(0.6, 1), uniform position angle, centre ~ U(-0.1", 0.1") per axis; plus external ``SHEAR`` with
|gamma| ~ U(0, 0.08) and uniform angle. Ellipticities are lenstronomy's (e1, e2) = (1-q)/(1+q) (cos 2phi,
sin 2phi).

*Source.* Elliptical Sersic (``SERSIC_ELLIPSE``) at z_s, placed uniformly within 0.5 theta_E of the lens
centre (so it is multiply imaged), R_sersic ~ U(0.1", 0.4"), n ~ U(0.8, 2.5), q ~ U(0.5, 1), total
(unlensed) AB magnitude ~ U(21, 23), the bright end of lensed sources. ``source_amp`` is lenstronomy's
amplitude (surface brightness at R_sersic) in the file's units.

*Lens light* (off by default, ``lens_light=True``): Sersic with the mass profile's centre and ellipticity,
R_sersic ~ U(0.5, 1) theta_E, n ~ U(3, 5) (early-type), AB magnitude ~ U(19, 21).

*Substructure classes* (``label`` indexes ``class_names``, classes cycle so they are balanced):

``no_sub``
    the smooth SIE + shear only.
``cdm``
    CDM subhalos as point masses with dN/dm ~ m^-1.9 between 1e6 and 1e10 Msun, uniform in projection
    within 2 theta_E of the lens centre. The mean number is set by a projected substructure mass
    fraction f_sub = 1 % of the (isothermal) mass within 2 theta_E, i.e. ~530 (theta_E/1")^2 subhalos
    (Poisson). All of them enter ``n_subhalos`` and ``subhalo_mass_total``, but only those above 1e7 Msun
    (~13 %) are ray-traced: a 1e7 Msun point mass deflects light by ~5e-4" (0.01-0.02 HR px) one pixel
    away, and those below hold 17 % of the subhalo mass, a mean convergence < 1e-3.
``vortex``
    an axion-like vortex (cf. DeepLenseSim's line of point masses): 50 equal point masses evenly spaced
    on a straight string of total mass ~ logU(3e9, 3e10) Msun and half-length ~ U(0.25, 0.75) theta_E,
    centred at radius ~ U(0.7, 1.3) theta_E from the lens (i.e. on the Einstein ring), random angles.
``non_lens`` (opt-in)
    the same galaxies and noise without lensing: the source is seen unlensed at its true position (plus
    the lens light if on). Its ``theta_E``, ``gamma1``, ``gamma2`` are stored as 0.

*Rendering.* Surface brightness is evaluated (ray-traced through the lens) once, on a grid
``supersampling`` times finer than the HR pixels. Each instrument convolves that grid with its Gaussian
PSF (truncated at 4 sigma) and averages it over its own pixels (lenstronomy's supersampled Gaussian
convolution), so HR and LR integrate exactly the same sky. In ``lr_mode="degrade"`` the LR image is the
noise-free HR image blurred by the Gaussian that brings the HR PSF to the LR PSF
(sigma^2 = sigma_lr^2 - sigma_hr^2) and averaged over scale x scale blocks, then observed with LR noise.

*Instruments.* Each preset names its HR instrument (pixel scale, Gaussian PSF FWHM, AB zero point, sky
brightness, exposure, read noise). The LR instrument for ``scale`` s is the same design with an s times
smaller aperture: pixels and PSF FWHM s times larger, zero point 5 log10 s fainter, same exposure, sky and
read noise. An LR pixel then collects as many electrons per unit surface brightness as an HR pixel, so
the two have the same per-pixel depth and differ in resolution only.

*Noise.* Counts are Poisson on the sky-subtracted model (source + lens light) in electrons, plus Gaussian
background noise of variance (sky electrons + N_exp x read noise^2) per pixel; images are converted back
to surface brightness. With the depths below, bright arc pixels reach S/N ~ 100-300 in HR and the bicubic
baseline scores PSNR ~ 33 dB (tiny) to ~40 dB (model_i) on min-max scaled HR, like DeepLense's ~40 dB
(measured figures: experiments/benchmarks/README.md).

*Units.* Surface brightness relative to AB 20 mag/arcsec^2 (``UNITS``): a pixel value v means
20 - 2.5 log10(v) mag/arcsec^2. Bright arc pixels of the HR images have values of order 1. Both HR and LR
are in these units, so an interpolated LR image approximates the HR one without rescaling.

Presets
-------
HR instrument (zero point ZP in AB mag for 1 e-/s, sky in AB mag/arcsec^2); LR at scale 2 in brackets.

``model_i``   DeepLenseSim Model I-like: 150 px at 0.05"/px, FWHM 0.087" [75 px, 0.1", FWHM 0.174"];
              HST/ACS F814W-like ZP 25.9, sky 22.3, 8 x 1500 s, read noise 4 e-.
``model_ii``  Euclid VIS as the LR: HR 128 px at 0.05", FWHM 0.08", a 2.4 m telescope (HST/ACS-like);
              [64 px, 0.1", FWHM 0.16", ZP 25.72: Euclid VIS, 1.2 m]; sky 22.3, Euclid Wide's 4 x 566 s,
              read noise 4.2 e-.
``model_iii`` HST WFC3/UVIS-like (F606W): 128 px at 0.04", FWHM 0.07" [64 px, 0.08", FWHM 0.14"];
              ZP 26.1, sky 22.6, 8 x 1200 s, read noise 3.1 e-.
``tiny``      64 px at 0.1", FWHM 0.16" (Euclid VIS sampling and depth, 6.4" field) [32 px, 0.2"]. For
              tests and demos: ~100 images/s on one core.

Reproducibility
---------------
Image ``i`` uses ``np.random.SeedSequence([seed, i])``, spawned into independent streams for the sky,
the substructure, the HR noise and the LR noise. The output is bit-for-bit identical for any number of
workers or block sizes, and switching ``noise_free_hr``, ``lr_mode`` or ``lens_light`` leaves the other
draws unchanged. With ``workers`` > 1, blocks of images run in processes forked from a forkserver that
imported this module once (each worker still loads lenstronomy's numba-compiled SIE, ~0.5 s), and come
back in order, at most two blocks per worker in flight.
"""

from __future__ import annotations

import math
import multiprocessing
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import lenstronomy.Util.util as lenstronomy_util
import numpy as np
from astropy.cosmology import FlatLambdaCDM
from lenstronomy.Cosmo.lens_cosmo import LensCosmo
from lenstronomy.ImSim.Numerics.convolution import MultiGaussianConvolution
from lenstronomy.LensModel.lens_model import LensModel
from lenstronomy.LensModel.Profiles.point_mass import PointMass
from lenstronomy.LightModel.light_model import LightModel

from lensearch.errors import UserError

__all__ = ["CLASS_NAMES", "DEFAULT_CLASSES", "LR_MODES", "PARAM_NAMES", "PRESETS", "UNITS", "Instrument",
           "Preset", "Renderer", "SimConfig", "Sky", "draw_sky", "iter_blocks", "make_config",
           "point_mass_theta_E", "simulate_arrays", "simulate_block", "simulate_to_h5"]

Z_LENS, Z_SOURCE = 0.5, 1.0
H0, OMEGA_M = 70.0, 0.3
MU_REF = 20.0  # AB mag/arcsec^2 of a pixel value 1
UNITS = f"surface brightness relative to AB {MU_REF:g} mag/arcsec^2 (v -> {MU_REF:g} - 2.5 log10 v mag/arcsec^2)"
PSF_TRUNCATION = 4.0  # Gaussian PSF truncated at this many sigma

CLASS_NAMES = ("no_sub", "cdm", "vortex", "non_lens")
DEFAULT_CLASSES = ("no_sub", "cdm", "vortex")
LR_MODES = ("instrument", "degrade")
SCALES = (2, 4)

PARAM_NAMES = (
    "theta_E", "e1", "e2", "center_x", "center_y", "gamma1", "gamma2",
    "source_x", "source_y", "source_R_sersic", "source_n_sersic", "source_e1", "source_e2", "source_amp",
    "source_mag", "lens_light_mag", "lens_light_R_sersic", "lens_light_n_sersic",
    "n_subhalos", "subhalo_mass_total",
)

# Substructure (see the module docstring).
SUB_SLOPE, SUB_M_MIN, SUB_M_MAX = -1.9, 1e6, 1e10
SUB_F_MASS = 0.01
SUB_RENDER_MIN = 1e7
VORTEX_POINTS = 50


# --------------------------------------------------------------------------------------------- instruments
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
        """The same design with a ``scale`` times smaller aperture (see the module docstring)."""
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


# Instrument(pixel_scale ["/px], psf_fwhm ["], ...) of the HR images; see "Presets" in the module docstring.
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


# --------------------------------------------------------------------------------------------- config
@dataclass(frozen=True)
class SimConfig:
    """Everything that determines a simulated data set, validated by :func:`make_config`."""

    preset: str
    seed: int
    scale: int = 2
    lr_mode: str = "instrument"
    classes: tuple[str, ...] = DEFAULT_CLASSES
    noise_free_hr: bool = False
    lens_light: bool = False

    @property
    def hr_size(self) -> int:
        return PRESETS[self.preset].hr_size

    @property
    def lr_size(self) -> int:
        return self.hr_size // self.scale

    def attrs(self) -> dict[str, Any]:
        """The file attributes of docs/architecture.md, plus the simulation switches."""
        p = PRESETS[self.preset]
        lr = p.lr(self.scale)
        return {"preset": self.preset, "seed": self.seed, "source": "simulate", "lr_mode": self.lr_mode,
                "pixel_scale_hr": p.hr.pixel_scale, "pixel_scale_lr": lr.pixel_scale,
                "psf_fwhm_hr": p.hr.psf_fwhm, "psf_fwhm_lr": lr.psf_fwhm, "units": UNITS,
                "z_lens": Z_LENS, "z_source": Z_SOURCE, "noise_free_hr": self.noise_free_hr,
                "lens_light": self.lens_light}


def _choices(values: Iterable[Any]) -> str:
    return ", ".join(str(v) for v in values)


def make_config(preset: str, seed: int, *, scale: int = 2, lr_mode: str = "instrument",
                classes: Sequence[str] | str | None = None, include_non_lens: bool = False,
                noise_free_hr: bool = False, lens_light: bool = False) -> SimConfig:
    """Validate the user's choices; each mistake is a one-line :class:`UserError`."""
    if preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r}; valid presets: {_choices(PRESETS)}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise UserError(f"seed must be a non-negative integer, got {seed!r}")
    hr_size = PRESETS[preset].hr_size
    valid_scales = [s for s in SCALES if hr_size % s == 0]
    if scale not in valid_scales:
        raise UserError(f"scale {scale!r} is not available for preset {preset} (HR {hr_size} px); "
                        f"valid scales: {_choices(valid_scales)}")
    if lr_mode not in LR_MODES:
        raise UserError(f"unknown lr mode {lr_mode!r}; valid modes: {_choices(LR_MODES)}")
    if isinstance(classes, str):
        classes = [c.strip() for c in classes.split(",") if c.strip()]
    names = list(DEFAULT_CLASSES if classes is None else classes)
    if include_non_lens and "non_lens" not in names:
        names.append("non_lens")
    for c in names:
        if c not in CLASS_NAMES:
            raise UserError(f"unknown class {c!r}; valid classes: {_choices(CLASS_NAMES)}")
    if not names or len(set(names)) != len(names):
        raise UserError(f"classes must be a non-empty list without repeats, got {names}; "
                        f"valid classes: {_choices(CLASS_NAMES)}")
    return SimConfig(preset, int(seed), int(scale), lr_mode, tuple(names), bool(noise_free_hr),
                     bool(lens_light))


def _check_count(count: Any) -> int:
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 1:
        raise UserError(f"count must be a positive integer, got {count!r}")
    return int(count)


def _check_workers(workers: Any) -> int:
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1:
        raise UserError(f"workers must be a positive integer, got {workers!r}")
    return int(workers)


# --------------------------------------------------------------------------------------------- the sky
# Mass (Msun) inside an Einstein radius of 1": pi Sigma_crit (1")^2 for z_l, z_s above.
MASS_IN_1_ARCSEC = float(LensCosmo(Z_LENS, Z_SOURCE, cosmo=FlatLambdaCDM(H0=H0, Om0=OMEGA_M)).mass_in_theta_E(1.0))
SERSIC = LightModel(["SERSIC_ELLIPSE"])


def point_mass_theta_E(mass: np.ndarray | float) -> np.ndarray:
    """Einstein radius (arcsec) of a point mass (Msun) at z_l lensing a source at z_s."""
    return np.sqrt(np.asarray(mass, dtype=float) / MASS_IN_1_ARCSEC)


def _power_law_masses(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` masses from dN/dm ~ m^SUB_SLOPE on [SUB_M_MIN, SUB_M_MAX] (inverse CDF)."""
    a = SUB_SLOPE + 1
    lo, hi = SUB_M_MIN**a, SUB_M_MAX**a
    return (lo + (hi - lo) * rng.random(n)) ** (1 / a)


def _mean_subhalo_mass() -> float:
    """Mean of the power-law mass function (Msun), ~1.4e7."""
    a, b = SUB_SLOPE + 1, SUB_SLOPE + 2
    return (a / b) * (SUB_M_MAX**b - SUB_M_MIN**b) / (SUB_M_MAX**a - SUB_M_MIN**a)


MEAN_SUBHALO_MASS = _mean_subhalo_mass()


def _polar(magnitude: float, phi: float) -> tuple[float, float]:
    """Spin-2 components (lenstronomy's e1, e2 or gamma1, gamma2) of ``magnitude`` at angle ``phi``."""
    return magnitude * math.cos(2 * phi), magnitude * math.sin(2 * phi)


def _ellipticity(q: float, phi: float) -> tuple[float, float]:
    return _polar((1 - q) / (1 + q), phi)


def _in_disk(rng: np.random.Generator, radius: float, n: int | None = None) -> tuple[Any, Any]:
    """Points uniform in area inside a disk of ``radius`` centred on 0."""
    r, phi = radius * np.sqrt(rng.random(n)), rng.uniform(0, 2 * np.pi, n)
    return r * np.cos(phi), r * np.sin(phi)


@dataclass
class Sky:
    """One lens system: lenstronomy keyword lists plus the stored parameters."""

    lensed: bool
    kwargs_lens: list[dict[str, Any]]
    kwargs_light: list[dict[str, Any]]  # source, then lens light (if any)
    params: dict[str, float]


def _draw_cdm(rng: np.random.Generator, theta_E: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    mass_within_2_theta_E = 2 * MASS_IN_1_ARCSEC * theta_E**2  # isothermal: M(<R) grows like R
    n = rng.poisson(SUB_F_MASS * mass_within_2_theta_E / MEAN_SUBHALO_MASS)
    masses = _power_law_masses(rng, n)
    x, y = _in_disk(rng, 2 * theta_E, n)
    return masses, x, y


def _draw_vortex(rng: np.random.Generator, theta_E: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    total = 10 ** rng.uniform(math.log10(3e9), math.log10(3e10))
    half_length = rng.uniform(0.25, 0.75) * theta_E
    r, phi, angle = rng.uniform(0.7, 1.3) * theta_E, rng.uniform(0, 2 * np.pi), rng.uniform(0, np.pi)
    t = np.linspace(-half_length, half_length, VORTEX_POINTS)
    x, y = r * math.cos(phi) + t * math.cos(angle), r * math.sin(phi) + t * math.sin(angle)
    return np.full(VORTEX_POINTS, total / VORTEX_POINTS), x, y


_SUBSTRUCTURE: dict[str, Callable[[np.random.Generator, float], tuple[np.ndarray, np.ndarray, np.ndarray]]] = {
    "cdm": _draw_cdm, "vortex": _draw_vortex,
}


def _sersic_amp(magnitude: float, kwargs: dict[str, Any]) -> float:
    """Amplitude giving a Sersic profile the total AB ``magnitude`` in the file's units."""
    unit_flux = SERSIC.total_flux([kwargs], norm=True)[0]
    return float(10 ** (-0.4 * (magnitude - MU_REF)) / unit_flux)


def _draw_lens(rng: np.random.Generator) -> dict[str, float]:
    """SIE + external shear parameters (arcsec)."""
    e1, e2 = _ellipticity(rng.uniform(0.6, 1.0), rng.uniform(0, np.pi))
    gamma1, gamma2 = _polar(rng.uniform(0, 0.08), rng.uniform(0, np.pi))
    cx, cy = rng.uniform(-0.1, 0.1, 2)
    return {"theta_E": rng.uniform(0.8, 1.6), "e1": e1, "e2": e2, "center_x": cx, "center_y": cy,
            "gamma1": gamma1, "gamma2": gamma2}


def _draw_sersic(rng: np.random.Generator, magnitudes: tuple[float, float], r_sersic: tuple[float, float],
                 n_sersic: tuple[float, float], center: tuple[float, float],
                 ellipticity: tuple[float, float] | None = None) -> tuple[dict[str, float], float]:
    """Sersic keyword arguments (random ellipticity unless given) and the drawn AB magnitude."""
    e1, e2 = ellipticity or _ellipticity(rng.uniform(0.5, 1.0), rng.uniform(0, np.pi))
    kwargs = {"R_sersic": rng.uniform(*r_sersic), "n_sersic": rng.uniform(*n_sersic), "e1": e1, "e2": e2,
              "center_x": center[0], "center_y": center[1]}
    magnitude = rng.uniform(*magnitudes)
    kwargs["amp"] = _sersic_amp(magnitude, kwargs)
    return kwargs, magnitude


def draw_sky(cls: str, rng: np.random.Generator, rng_sub: np.random.Generator, lens_light: bool) -> Sky:
    """Draw one lens system of class ``cls`` (priors in the module docstring)."""
    lens = _draw_lens(rng)
    theta_E, center = lens["theta_E"], (lens["center_x"], lens["center_y"])
    offset = _in_disk(rng, 0.5 * theta_E)
    source, source_mag = _draw_sersic(rng, (21.0, 23.0), (0.1, 0.4), (0.8, 2.5),
                                      (center[0] + offset[0], center[1] + offset[1]))
    light, light_mag = _draw_sersic(rng, (19.0, 21.0), (0.5 * theta_E, theta_E), (3.0, 5.0), center,
                                    (lens["e1"], lens["e2"]))
    masses, x, y = _SUBSTRUCTURE[cls](rng_sub, theta_E) if cls in _SUBSTRUCTURE else (np.zeros(0),) * 3
    keep = masses >= SUB_RENDER_MIN
    lensed = cls != "non_lens"

    params = {**lens, "source_x": source["center_x"], "source_y": source["center_y"],
              **{f"source_{k}": source[k] for k in ("R_sersic", "n_sersic", "e1", "e2", "amp")},
              "source_mag": source_mag, "lens_light_mag": light_mag, "lens_light_R_sersic": light["R_sersic"],
              "lens_light_n_sersic": light["n_sersic"], "n_subhalos": masses.size,
              "subhalo_mass_total": masses.sum()}
    if not lensed:
        params.update(theta_E=0.0, gamma1=0.0, gamma2=0.0)
    if not lens_light:
        params.update(lens_light_mag=0.0, lens_light_R_sersic=0.0, lens_light_n_sersic=0.0)
    kwargs_lens = [
        {k: lens[k] for k in ("theta_E", "e1", "e2", "center_x", "center_y")},
        {"gamma1": lens["gamma1"], "gamma2": lens["gamma2"], "ra_0": center[0], "dec_0": center[1]},
        {"theta_E": point_mass_theta_E(masses[keep]), "x0": center[0] + x[keep], "y0": center[1] + y[keep]},
    ]
    return Sky(lensed, kwargs_lens, [source, light] if lens_light else [source], params)


# --------------------------------------------------------------------------------------------- rendering
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
    """Noise-free HR and LR images of a :class:`Sky` for a preset, scale and LR mode (see "Rendering")."""

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
def _renderer(preset: str, scale: int, lr_mode: str) -> Renderer:
    return Renderer(preset, scale, lr_mode)


# --------------------------------------------------------------------------------------------- blocks
def simulate_block(config: SimConfig, start: int, stop: int) -> dict[str, np.ndarray]:
    """Images ``start .. stop-1``: ``hr``, ``hr_clean`` (b,1,H,W), ``lr`` (b,1,h,w), ``label``, ``params``."""
    renderer = _renderer(config.preset, config.scale, config.lr_mode)
    b, big, small = stop - start, config.hr_size, config.lr_size
    out = {"hr": np.empty((b, 1, big, big), np.float32), "hr_clean": np.empty((b, 1, big, big), np.float32),
           "lr": np.empty((b, 1, small, small), np.float32), "label": np.empty(b, np.int64),
           "params": np.empty((b, len(PARAM_NAMES)), np.float32)}
    for j, i in enumerate(range(start, stop)):
        rng_sky, rng_sub, rng_hr, rng_lr = (np.random.default_rng(s)
                                            for s in np.random.SeedSequence([config.seed, i]).spawn(4))
        label = i % len(config.classes)
        sky = draw_sky(config.classes[label], rng_sky, rng_sub, config.lens_light)
        hr_clean, lr_clean = renderer.render(sky)
        out["hr_clean"][j, 0] = hr_clean
        out["hr"][j, 0] = hr_clean if config.noise_free_hr else renderer.hr.observe(hr_clean, rng_hr)
        out["lr"][j, 0] = renderer.lr.observe(lr_clean, rng_lr)
        out["label"][j] = label
        out["params"][j] = [sky.params[name] for name in PARAM_NAMES]
    return out


def _block_size(config: SimConfig, count: int, workers: int) -> int:
    """About 2^19 HR pixels per block, and at least 4 blocks per worker when there are enough images."""
    return max(1, min(2**19 // config.hr_size**2, math.ceil(count / (4 * workers))))


def _run_block(task: tuple[SimConfig, int, int]) -> dict[str, np.ndarray]:
    return simulate_block(*task)


def _process_context() -> multiprocessing.context.BaseContext:
    """Worker processes forked from a server that imported this module once (cheap start, no fork of a
    threaded parent); plain spawn where forkserver does not exist."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload([__name__])
    return ctx


def _ordered_map(fn: Callable[[Any], Any], tasks: Iterable[Any], workers: int) -> Iterator[Any]:
    """``map(fn, tasks)`` in order; with ``workers`` > 1 in a process pool, at most 2 tasks per
    worker in flight so memory stays bounded. Pending work is cancelled if the consumer stops."""
    if workers == 1:
        yield from map(fn, tasks)
        return
    pool = ProcessPoolExecutor(workers, mp_context=_process_context())
    try:
        pending: deque = deque()
        for task in tasks:
            pending.append(pool.submit(fn, task))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def iter_blocks(config: SimConfig, count: int, workers: int = 1,
                progress: bool = False) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    """Yield ``(start, block)`` in order over images ``0 .. count-1`` (see :func:`simulate_block`)."""
    from tqdm import tqdm

    size = _block_size(config, count, workers)
    starts = range(0, count, size)
    tasks = ((config, a, min(a + size, count)) for a in starts)
    with tqdm(total=count, unit="img", desc=f"simulate {config.preset}", file=sys.stderr,
              disable=not (progress and sys.stderr.isatty())) as bar:
        for start, block in zip(starts, _ordered_map(_run_block, tasks, workers)):
            bar.update(len(block["label"]))
            yield start, block


# --------------------------------------------------------------------------------------------- public API
def simulate_arrays(preset: str, count: int, seed: int, *, scale: int = 2, lr_mode: str = "instrument",
                    classes: Sequence[str] | str | None = None, include_non_lens: bool = False,
                    noise_free_hr: bool = False, lens_light: bool = False, workers: int = 1,
                    progress: bool = False) -> dict[str, Any]:
    """Simulate ``count`` images in memory.

    Returns ``hr``, ``hr_clean`` (N,1,H,W) and ``lr`` (N,1,h,w) float32, ``label`` (N,) int64, ``params``
    (N,K) float32, ``param_names``, ``class_names`` and ``attrs`` (the file attributes).
    """
    config = make_config(preset, seed, scale=scale, lr_mode=lr_mode, classes=classes,
                         include_non_lens=include_non_lens, noise_free_hr=noise_free_hr, lens_light=lens_light)
    count, workers = _check_count(count), _check_workers(workers)
    blocks = [block for _, block in iter_blocks(config, count, workers, progress)]
    out: dict[str, Any] = {k: np.concatenate([b[k] for b in blocks]) for k in blocks[0]}
    out.update(param_names=list(PARAM_NAMES), class_names=list(config.classes), attrs=config.attrs())
    return out


def simulate_to_h5(path: str | Path, preset: str, count: int, seed: int, *, scale: int = 2,
                   lr_mode: str = "instrument", classes: Sequence[str] | str | None = None,
                   include_non_lens: bool = False, noise_free_hr: bool = False, lens_light: bool = False,
                   workers: int = 1, progress: bool = False,
                   split_fractions: Sequence[float] = (0.8, 0.1, 0.1)) -> dict[str, Any]:
    """Simulate ``count`` images straight into a store file (block by block; see :mod:`lensearch.data.store`).

    Returns a summary: ``path``, ``count``, ``hr_shape``, ``lr_shape``, ``class_names``, ``seconds``.
    """
    from lensearch.data.writer import H5Writer

    config = make_config(preset, seed, scale=scale, lr_mode=lr_mode, classes=classes,
                         include_non_lens=include_non_lens, noise_free_hr=noise_free_hr, lens_light=lens_light)
    count, workers = _check_count(count), _check_workers(workers)
    t0 = time.perf_counter()
    with H5Writer(path, n=count, hr_size=config.hr_size, lr_size=config.lr_size, scale=config.scale,
                  param_names=PARAM_NAMES, class_names=config.classes, with_clean=True, attrs=config.attrs(),
                  split_fractions=split_fractions, split_seed=config.seed) as writer:
        for start, block in iter_blocks(config, count, workers, progress):
            writer.write(start, **block)
    return {"path": Path(path), "count": count, "hr_shape": (config.hr_size,) * 2,
            "lr_shape": (config.lr_size,) * 2, "class_names": list(config.classes),
            "seconds": time.perf_counter() - t0}
