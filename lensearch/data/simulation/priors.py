"""The sky: cosmology, lens, source, lens light and substructure priors; :func:`draw_sky` draws one system.

See "Physics" in docs/simulation.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from astropy.cosmology import FlatLambdaCDM
from lenstronomy.Cosmo.lens_cosmo import LensCosmo
from lenstronomy.LightModel.light_model import LightModel

from lensearch.data.simulation.instruments import MU_REF

__all__ = ["CLASS_NAMES", "DEFAULT_CLASSES", "PARAM_NAMES", "SERSIC", "Z_LENS", "Z_SOURCE", "Sky", "draw_sky",
           "point_mass_theta_E"]

Z_LENS, Z_SOURCE = 0.5, 1.0
H0, OMEGA_M = 70.0, 0.3

CLASS_NAMES = ("no_sub", "cdm", "vortex", "non_lens")
DEFAULT_CLASSES = ("no_sub", "cdm", "vortex")

PARAM_NAMES = (
    "theta_E", "e1", "e2", "center_x", "center_y", "gamma1", "gamma2",
    "source_x", "source_y", "source_R_sersic", "source_n_sersic", "source_e1", "source_e2", "source_amp",
    "source_mag", "lens_light_mag", "lens_light_R_sersic", "lens_light_n_sersic",
    "n_subhalos", "subhalo_mass_total",
)

# Substructure (see docs/simulation.md).
SUB_SLOPE, SUB_M_MIN, SUB_M_MAX = -1.9, 1e6, 1e10
SUB_F_MASS = 0.01
SUB_RENDER_MIN = 1e7
VORTEX_POINTS = 50

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
    """Draw one lens system of class ``cls`` (priors in docs/simulation.md)."""
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
