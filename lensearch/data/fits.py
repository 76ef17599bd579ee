"""FITS files, one set of rules for every reader and writer (``lensearch data import-fits``, ``lensearch upscale``).

* File names: ``.fits``/``.fit``/``.fts``, gzipped (``.gz``) or tile-compressed by fpack (``.fz``, whose image
  is a compressed extension behind an empty primary HDU): :data:`FITS_SUFFIXES`, :func:`fits_suffix`.
* The image HDU: :func:`parse_hdu` reads ``--hdu N|NAME`` (an index, negative ones counting from the end as
  in Python and astropy, or an EXTNAME); :func:`pick_image_hdu` takes that HDU, or the file's only image
  HDU (at least 2 axes) when none is given, with one-line errors that list the image HDUs.
* :func:`pixel_scale`: arcsec/px of axes 1-2 from the WCS (``proj_plane_pixel_scales``), else from a
  pixel-scale keyword (``PIXSCALE``, ...); NaN when unknown.
* :func:`rescale_wcs`: a header updated for an image upscaled by an integer factor over the same footprint.
"""

from __future__ import annotations

import math
import os
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from lensearch.errors import UserError, expect

__all__ = ["FITS_SUFFIXES", "PIXEL_SCALE_KEYS", "fits_suffix", "image_hdus", "open_fits", "parse_hdu",
           "pick_image_hdu", "pixel_scale", "read_image", "rescale_wcs"]

FITS_SUFFIXES = tuple(base + packed for packed in ("", ".gz", ".fz") for base in (".fits", ".fit", ".fts"))
PIXEL_SCALE_KEYS = ("PIXSCALE", "PIXSCAL1", "PIXSCAL2", "SECPIX", "SECPIX1", "SECPIX2")  # arcsec/px
_AXIS_KEY = re.compile(r"(CDELT|CRPIX)([12])([A-Z]?)")
_CD_KEY = re.compile(r"CD[12]_[12][A-Z]?")
_SIP_KEY = re.compile(r"(A|B|AP|BP)_(\d+)_(\d+)")
_SCALE_KEY = re.compile(r"(CD[12]_[12]|CDELT[12]|PC[12]_[12])")


def fits_suffix(name: str | os.PathLike) -> str:
    """The FITS suffix ``name`` ends with (longest match, case-insensitive, e.g. ``.fits.fz``), else ``""``."""
    lower = Path(name).name.lower()
    return max((s for s in FITS_SUFFIXES if lower.endswith(s)), key=len, default="")


def parse_hdu(text: str | None) -> int | str | None:
    """``--hdu``: an integer index (``-1`` is the last HDU) or an EXTNAME; None stays None."""
    if text is None:
        return None
    text = text.strip()
    return int(text) if text.lstrip("+-").isdigit() else text


def open_fits(path: Path):
    """All of ``path`` read into memory (every HDU, header and data) as an ``HDUList``; a one-line
    :class:`UserError` naming the file when any of it cannot be read (astropy raises OSError, ValueError,
    KeyError, TypeError, ... on corrupt files, and warns about truncated ones)."""
    from astropy.io import fits

    hdul = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            hdul = fits.open(path, memmap=False)
            hdul.readall()
            for h in hdul:
                h.data  # noqa: B018 - decode every HDU now (compressed ones decompress here)
        return hdul
    except Exception as err:
        if hdul is not None:
            hdul.close()
        raise UserError(f"{path}: unreadable FITS file ({_reason(err)})") from None


def _reason(err: Exception) -> str:
    text = (str(err).strip().splitlines() or [""])[0]
    return text if isinstance(err, (OSError, ValueError, EOFError)) and text else f"{type(err).__name__}: {text}"


def image_hdus(hdul) -> list[int]:
    """Indices of the image HDUs with at least 2 axes (fpack's compressed images included)."""
    return [i for i, h in enumerate(hdul) if getattr(h, "is_image", False) and h.header.get("NAXIS", 0) >= 2]


def _listing(hdul, indices: list[int]) -> str:
    return ", ".join(f"{i} {hdul[i].name or '(no name)'}" for i in indices)


def pick_image_hdu(hdul, hdu: int | str | None, path: Path) -> int:
    """The index of the image HDU to read: ``hdu`` (index, negative from the end, or EXTNAME), else the file's
    only image HDU; one-line :class:`UserError` naming the file otherwise."""
    images = image_hdus(hdul)
    if hdu is None:
        expect(images, f"{path}: no image HDU with at least 2 axes")
        expect(len(images) == 1, f"{path}: {len(images)} image HDUs ({_listing(hdul, images)}); choose one with "
                                 f"--hdu N|NAME")
        return images[0]
    if isinstance(hdu, (int, np.integer)):
        index = int(hdu) + len(hdul) if hdu < 0 else int(hdu)
        found = 0 <= index < len(hdul)
    else:
        try:
            index, found = hdul.index_of(hdu), True
        except KeyError:
            index, found = -1, False
    expect(found, f"{path}: --hdu {hdu} not found (HDUs: {_listing(hdul, list(range(len(hdul))))})")
    expect(index in images, f"{path}: --hdu {hdu} is not an image HDU with at least 2 axes; image HDUs: "
                            f"{_listing(hdul, images) or 'none'}")
    return index


def read_image(path: Path, hdu: int | str | None = None) -> tuple[np.ndarray, Any]:
    """The pixels (float32) and header of the image HDU of ``path`` (see :func:`pick_image_hdu`). An unreadable
    file raises what astropy raises (callers that skip unreadable files catch it); a bad HDU choice is a
    :class:`UserError`."""
    from astropy.io import fits

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with fits.open(path, memmap=False) as hdul:
            h = hdul[pick_image_hdu(hdul, hdu, path)]
            return np.asarray(h.data, dtype=np.float32), h.header.copy()


def pixel_scale(header) -> float:
    """arcsec/px of axes 1-2: from the WCS (CD, PC + CDELT or CDELT keywords; the geometric mean of
    ``proj_plane_pixel_scales``, angles in CUNIT or degrees), else from a pixel-scale keyword
    (:data:`PIXEL_SCALE_KEYS`, arcsec); NaN when the header has neither."""
    import astropy.units as u
    from astropy.wcs import WCS
    from astropy.wcs.utils import proj_plane_pixel_scales

    if any(_SCALE_KEY.fullmatch(k) for k in header.keys()):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                wcs = WCS(header, naxis=2)
                scales = proj_plane_pixel_scales(wcs)
            arcsec = [float((s * (unit if unit != u.dimensionless_unscaled else u.deg)).to_value(u.arcsec))
                      for s, unit in zip(scales, wcs.wcs.cunit)]
            value = math.sqrt(abs(arcsec[0] * arcsec[1]))
            if math.isfinite(value) and value > 0:
                return value
        except Exception:  # noqa: BLE001 - a WCS astropy cannot read, or non-angular units: unknown
            pass
    for key in PIXEL_SCALE_KEYS:
        try:
            value = abs(float(header[key]))
        except (KeyError, TypeError, ValueError):
            continue
        if math.isfinite(value) and value > 0:
            return value
    return math.nan


def rescale_wcs(header, scale: int) -> None:
    """Update a FITS header in place for pixels ``scale`` times smaller on axes 1 and 2, same footprint.

    ``CDELTn`` and the ``CDi_j`` matrix (and pixel-scale keywords such as ``PIXSCALE``) are divided by
    ``scale``; ``CRPIXn`` becomes ``(CRPIXn - 0.5) * scale + 0.5``, so every sky position stays at the same
    place in the image (FITS pixel n covers [n - 0.5, n + 0.5]); SIP distortion coefficients ``A/B/AP/BP_p_q``
    are multiplied by ``scale**(1 - p - q)``. Alternate WCS (suffix A-Z) are updated alike; ``NAXISn``
    follows the data when written.
    """
    for key in list(header.keys()):
        if match := _AXIS_KEY.fullmatch(key):
            value = header[key]
            header[key] = value / scale if match[1] == "CDELT" else (value - 0.5) * scale + 0.5
        elif _CD_KEY.fullmatch(key) or key in PIXEL_SCALE_KEYS:
            header[key] = header[key] / scale
        elif match := _SIP_KEY.fullmatch(key):
            header[key] = header[key] * float(scale) ** (1 - int(match[2]) - int(match[3]))
