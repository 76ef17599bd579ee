"""Physics-fidelity measures of a super-resolved lensing image against its HR reference.

PSNR and SSIM say how close the pixels are; these say whether the *physics* a lens modeller reads off the
image survived: the flux, the Einstein ring's radius and centre, the light along the ring, and which spatial
scales the model gets wrong. Every function takes 2-D float arrays ``(H, W)`` in data units (the same units
for SR and HR; no min-max scaling) and uses pixel coordinates ``(row, col)`` with ``(0, 0)`` the centre of the
top-left pixel. Definitions (also in ``docs/report.md``):

* **Flux error** (:func:`flux_error`): ``(sum(SR) - sum(HR)) / sum(HR)``, signed, relative.
* **Azimuthal profile** (:func:`radial_profile`): the mean pixel value in annuli of width ``bin_width`` px around
  a centre; the default centre is the image centre ``((H-1)/2, (W-1)/2)``.
* **Ring radius and centre** (:func:`fit_ring`): starting from the light-weighted centroid of the image above its
  median (or a given centre), repeat: the
  radius is the *half-maximum centroid* of the azimuthal profile's ring peak (the profile-weighted mean radius of
  the contiguous bins around the highest local maximum beyond ``min_radius`` whose value exceeds the midpoint
  between the peak and the background, the image median), then the centre becomes the light-weighted centroid
  of the background-subtracted pixels inside the annulus ``|r - R| <= max(2 * half width, 1.5 px)``. For a
  Gaussian ring both steps are unbiased, so the iteration converges to the ring's own radius and centre with
  sub-pixel accuracy. For a partial arc (an incomplete ring) the centre leans toward the arc: compare SR and HR
  with the same estimator, which is what the errors below do.
* **Ring radius / centre error** (:func:`physics_measures`): ``R_SR - R_HR`` in px and ``|c_SR - c_HR|`` in px.
* **Ring residual**: mean ``|SR - HR|`` over the HR ring annulus ``|r - R_HR| <= max(2 * half width, 1.5 px)``
  divided by mean ``|HR|`` there (relative error of the light along the ring).
* **Residual power spectrum** (:func:`residual_power_spectrum`): the radially averaged power ``|FFT|^2`` of
  ``SR - HR`` divided by that of ``HR``, per spatial-frequency bin (cycles per px, up to Nyquist 0.5). A value of
  1 in a bin means the model's error there is as strong as the signal itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Ring", "flux_error", "fit_ring", "physics_measures", "radial_profile", "residual_power_spectrum",
           "ring_residual"]

ANNULUS_MIN_HALF_WIDTH = 1.5  # px: the ring annulus is never thinner than this on either side


def _image(x: np.ndarray, name: str = "image") -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    a = a.reshape(a.shape[-2:]) if a.ndim > 2 and int(np.prod(a.shape[:-2])) == 1 else a
    if a.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D image (or one with leading axes of size 1), got shape {a.shape}")
    return a


def _radii(shape: tuple[int, int], center: tuple[float, float]) -> np.ndarray:
    rows, cols = np.indices(shape, dtype=np.float64)
    return np.hypot(rows - center[0], cols - center[1])


def image_center(shape: tuple[int, ...]) -> tuple[float, float]:
    """The geometric centre ``((H-1)/2, (W-1)/2)`` in pixel coordinates."""
    return ((shape[-2] - 1) / 2.0, (shape[-1] - 1) / 2.0)


def light_centroid(image: np.ndarray) -> tuple[float, float]:
    """The light-weighted centroid ``(row, col)`` of the image above its median (the image centre if none)."""
    img = _image(image)
    weights = np.clip(img - np.median(img), 0, None)
    if weights.sum() <= 0:
        return image_center(img.shape)
    rows, cols = np.indices(img.shape, dtype=np.float64)
    return float((rows * weights).sum() / weights.sum()), float((cols * weights).sum() / weights.sum())


def flux_error(sr: np.ndarray, hr: np.ndarray) -> float:
    """Relative total-flux error ``(sum(SR) - sum(HR)) / sum(HR)`` (signed; NaN when HR's flux is 0)."""
    sr, hr = _image(sr, "sr"), _image(hr, "hr")
    total = hr.sum()
    return float((sr.sum() - total) / total) if total != 0 else float("nan")


def _profile(img: np.ndarray, center: tuple[float, float], bin_width: float,
             max_radius: float | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(bin centres, mean pixel radius per bin, mean value per bin)``; empty bins NaN."""
    r = _radii(img.shape, center)
    if max_radius is None:
        max_radius = min(center[0], center[1], img.shape[0] - 1 - center[0], img.shape[1] - 1 - center[1]) + 0.5
    nbins = max(1, int(np.ceil(max_radius / bin_width)))
    idx = np.floor(r / bin_width).astype(np.int64).ravel()
    keep = idx < nbins
    counts = np.bincount(idx[keep], minlength=nbins)
    sums = np.bincount(idx[keep], weights=img.ravel()[keep], minlength=nbins)
    rsum = np.bincount(idx[keep], weights=r.ravel()[keep], minlength=nbins)
    with np.errstate(invalid="ignore", divide="ignore"):
        values = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
        mean_r = np.where(counts > 0, rsum / np.maximum(counts, 1), np.nan)
    return (np.arange(nbins) + 0.5) * bin_width, mean_r, values


def radial_profile(image: np.ndarray, center: tuple[float, float] | None = None, bin_width: float = 1.0,
                   max_radius: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Azimuthally averaged profile around ``center`` (default: the image centre).

    Returns ``(radii, values)``: bin centres in px and the mean pixel value of each annulus
    ``[k * bin_width, (k + 1) * bin_width)``; bins holding no pixel centre are NaN. ``max_radius`` defaults to the
    distance from the centre to the nearest image edge (annuli beyond it are incomplete).
    """
    img = _image(image)
    center = image_center(img.shape) if center is None else (float(center[0]), float(center[1]))
    radii, _, values = _profile(img, center, bin_width, max_radius)
    return radii, values


@dataclass
class Ring:
    """An Einstein ring estimated from an image: radius and half width at half maximum (px), centre (row, col)."""

    radius: float
    half_width: float
    center: tuple[float, float]

    @property
    def annulus(self) -> float:
        """Half width of the annulus used for the centre and the ring residual (px)."""
        return max(2.0 * self.half_width, ANNULUS_MIN_HALF_WIDTH)


def _ring_peak(radii: np.ndarray, values: np.ndarray, background: float, min_radius: float,
               bin_width: float) -> tuple[float, float] | None:
    """Half-maximum centroid radius and half width of the ring peak of a profile (None: no peak); ``radii``
    are the bins' mean pixel radii (not their centres: pixels sample radii unevenly)."""
    ok = np.isfinite(values) & np.isfinite(radii) & (radii >= min_radius)
    if ok.sum() < 3:
        return None
    radii, v = radii[ok], values[ok]  # only bins holding pixels: empty fine bins are no minima
    inner = np.arange(1, v.size - 1)
    local = inner[(v[inner] >= v[inner - 1]) & (v[inner] >= v[inner + 1]) & np.isfinite(v[inner])]
    peak = int(local[np.argmax(v[local])]) if local.size else int(np.argmax(v))
    half = background + 0.5 * (v[peak] - background)
    lo = peak
    while lo - 1 >= 0 and v[lo - 1] > half:
        lo -= 1
    hi = peak
    while hi + 1 < v.size and v[hi + 1] > half:
        hi += 1
    w = v[lo:hi + 1] - half
    if w.sum() <= 0:
        return float(radii[peak]), 0.5 * bin_width
    radius = float((radii[lo:hi + 1] * w).sum() / w.sum())
    half_width = 0.5 * (radii[hi] - radii[lo] + bin_width)
    return radius, float(half_width)


def fit_ring(image: np.ndarray, center: tuple[float, float] | None = None, *, min_radius: float = 2.0,
             bin_width: float = 0.25, iterations: int = 8, fit_center: bool = True) -> Ring | None:
    """Estimate the Einstein ring's radius, half width and centre (module docstring); None without a ring peak.

    Args:
        image: (H, W) image in data units.
        center: the starting centre (row, col); default the light-weighted centroid (:func:`light_centroid`).
        min_radius: ignore the profile inside this radius (lens light, the central image).
        bin_width: profile bin width in px (fine bins: the centroid is sub-pixel).
        iterations: radius/centre refinements (stops early once the centre moves < 1e-3 px).
        fit_center: False keeps ``center`` fixed and fits the radius only.
    """
    img = _image(image)
    background = float(np.median(img))
    center = light_centroid(img) if center is None else (float(center[0]), float(center[1]))
    ring = None
    for _ in range(max(1, iterations)):
        _, radii, values = _profile(img, center, bin_width, None)
        peak = _ring_peak(radii, values, background, min_radius, bin_width)
        if peak is None:
            return ring
        ring = Ring(peak[0], peak[1], center)
        if not fit_center:
            break
        r = _radii(img.shape, center)
        weights = np.where(np.abs(r - ring.radius) <= ring.annulus, np.clip(img - background, 0, None), 0.0)
        if weights.sum() <= 0:
            break
        rows, cols = np.indices(img.shape, dtype=np.float64)
        new = (float((rows * weights).sum() / weights.sum()), float((cols * weights).sum() / weights.sum()))
        moved = np.hypot(new[0] - center[0], new[1] - center[1])
        center = new
        if moved < 1e-3:
            break
    if fit_center and ring is not None and ring.center != center:  # the radius about the final centre
        _, radii, values = _profile(img, center, bin_width, None)
        peak = _ring_peak(radii, values, background, min_radius, bin_width)
        if peak is not None:
            ring = Ring(peak[0], peak[1], center)
    return ring


def ring_residual(sr: np.ndarray, hr: np.ndarray, ring: Ring) -> float:
    """Mean ``|SR - HR|`` over the ring annulus of ``ring`` divided by mean ``|HR|`` there (NaN if empty)."""
    sr, hr = _image(sr, "sr"), _image(hr, "hr")
    mask = np.abs(_radii(hr.shape, ring.center) - ring.radius) <= ring.annulus
    if not mask.any():
        return float("nan")
    scale = np.abs(hr[mask]).mean()
    return float(np.abs(sr[mask] - hr[mask]).mean() / scale) if scale > 0 else float("nan")


def power_spectrum(image: np.ndarray, nbins: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Radially averaged power ``|FFT(image)|^2 / (H W)`` per frequency bin: ``(frequencies, power)``.

    Frequencies are in cycles per px; bins are ``nbins`` (default ``min(H, W) // 2``) equal bins of the radial
    frequency ``sqrt(fy^2 + fx^2)`` from 0 to the Nyquist frequency 0.5 (corners beyond it are left out).
    """
    img = _image(image)
    h, w = img.shape
    nbins = nbins or max(1, min(h, w) // 2)
    power = np.abs(np.fft.fft2(img)) ** 2 / (h * w)
    fy, fx = np.meshgrid(np.fft.fftfreq(h), np.fft.fftfreq(w), indexing="ij")
    f = np.hypot(fy, fx).ravel()
    edges = np.linspace(0.0, 0.5, nbins + 1)
    idx = np.clip(np.digitize(f, edges) - 1, 0, nbins)  # f == 0.5 exactly belongs to the last bin
    idx[f == 0.5] = nbins - 1
    keep = f <= 0.5
    sums = np.bincount(idx[keep], weights=power.ravel()[keep], minlength=nbins)[:nbins]
    counts = np.bincount(idx[keep], minlength=nbins)[:nbins]
    with np.errstate(invalid="ignore", divide="ignore"):
        values = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return 0.5 * (edges[:-1] + edges[1:]), values


def residual_power_spectrum(sr: np.ndarray, hr: np.ndarray, nbins: int | None = None) -> dict[str, np.ndarray]:
    """The residual's power relative to HR's per frequency bin (module docstring).

    Returns ``{"frequency", "residual", "hr", "ratio"}``: bin centres (cycles/px), the radially averaged power of
    ``SR - HR`` and of ``HR``, and their ratio (NaN where HR has no power).
    """
    sr, hr = _image(sr, "sr"), _image(hr, "hr")
    freq, res = power_spectrum(sr - hr, nbins)
    _, ref = power_spectrum(hr, nbins)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(ref > 0, res / ref, np.nan)
    return {"frequency": freq, "residual": res, "hr": ref, "ratio": ratio}


def physics_measures(sr: np.ndarray, hr: np.ndarray, center: tuple[float, float] | None = None,
                     min_radius: float = 2.0) -> dict[str, float]:
    """All scalar measures of one SR/HR pair: ``flux_error``, ``ring_radius_hr``, ``ring_radius_sr``,
    ``ring_radius_error`` (px, SR - HR), ``ring_center_error`` (px), ``ring_residual``; ring values NaN when
    either image shows no ring peak."""
    out = {"flux_error": flux_error(sr, hr)}
    ring_hr = fit_ring(hr, center, min_radius=min_radius)
    ring_sr = fit_ring(sr, center, min_radius=min_radius)
    nan = float("nan")
    out["ring_radius_hr"] = ring_hr.radius if ring_hr else nan
    out["ring_radius_sr"] = ring_sr.radius if ring_sr else nan
    if ring_hr and ring_sr:
        out["ring_radius_error"] = ring_sr.radius - ring_hr.radius
        out["ring_center_error"] = float(np.hypot(ring_sr.center[0] - ring_hr.center[0],
                                                  ring_sr.center[1] - ring_hr.center[1]))
    else:
        out["ring_radius_error"] = out["ring_center_error"] = nan
    out["ring_residual"] = ring_residual(sr, hr, ring_hr) if ring_hr else nan
    return out
