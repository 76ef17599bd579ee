"""The file formats ``lensearch upscale`` reads and writes: ``.npy``, HDF5 and FITS, streamed in batches.

* ``.npy``: ``(h,w)`` one image, ``(K,h,w)`` K images (so ``(1,h,w)`` is one), or ``(N,1,h,w)``; written
  as ``.npy`` of the same rank with ``s*h, s*w``.
* HDF5 (``.h5``/``.hdf5``/``.hdf``): a lensearch data file is copied whole and gets a dataset ``sr``
  ``(N,1,s*h,s*w)`` upscaled from ``lr`` (row i of ``sr`` is row i of ``lr``, next to ``hr``); with
  ``dataset=NAME`` any file's dataset NAME (same layouts as ``.npy``) is upscaled into a new file holding
  only that dataset, under the same name, plus the input's file attributes.
* FITS (``.fits``/``.fit``/``.fts``, optionally ``.gz``): the chosen image HDU (``hdu=`` index or EXTNAME,
  needed when the file has several; 2-D, or 3-D as a stack of planes) is replaced by its SR image, every
  other HDU is kept. The header is kept and updated for the new sampling (:func:`rescale_wcs`) with a
  HISTORY card. Pixel values stay in the input's units (no flux rescaling: the models are trained on
  surface brightness, which does not depend on the pixel size).

Output pixels are float32. Images must be finite and at least ``min_side`` px (2, see
:mod:`lensearch.export.graphs`) on each side. Each writer fills a temporary file the caller renames.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from lensearch import __version__
from lensearch.errors import UserError, expect
from lensearch.upscale.runtime import Upscaler

__all__ = ["SUFFIXES", "WRITERS", "file_kind", "file_suffix", "rescale_wcs"]

SUFFIXES = {".npy": "npy", ".h5": "hdf5", ".hdf5": "hdf5", ".hdf": "hdf5", ".fits": "fits", ".fit": "fits",
            ".fts": "fits", ".fits.gz": "fits", ".fit.gz": "fits", ".fts.gz": "fits"}
PIXEL_SCALE_KEYS = ("PIXSCALE", "PIXSCAL1", "PIXSCAL2", "SECPIX", "SECPIX1", "SECPIX2")
_AXIS_KEY = re.compile(r"(CDELT|CRPIX)([12])([A-Z]?)")
_CD_KEY = re.compile(r"CD[12]_[12][A-Z]?")
_SIP_KEY = re.compile(r"(A|B|AP|BP)_(\d+)_(\d+)")


# ------------------------------------------------------------------------------------------- arrays
class _Images:
    """A 2-D ``(h,w)``, 3-D ``(K,h,w)`` or 4-D ``(N,C,h,w)`` array-like (numpy, memmap, h5py dataset) read
    as ``(N,C,h,w)`` float32 batches, without loading it whole."""

    def __init__(self, arr: Any, where: str, model: Upscaler):
        shape = tuple(arr.shape)
        expect(len(shape) in (2, 3, 4), f"{where}: expected an image (h,w), a stack (K,h,w) or (N,C,h,w), "
                                        f"got shape {shape}")
        expect(np.dtype(arr.dtype).kind in "biuf", f"{where}: expected real numbers, got dtype {arr.dtype}")
        expect(len(shape) < 4 or shape[1] == model.in_channels,
               f"{where}: shape {shape} has {shape[1] if len(shape) == 4 else 1} channel(s); the model takes "
               f"{model.in_channels}")
        h, w = shape[-2:]
        expect(min(h, w) >= model.min_side, f"{where}: images are {h}x{w} px; the model needs at least "
                                            f"{model.min_side}x{model.min_side}")
        self.arr, self.shape, self.where = arr, shape, where
        self.n = 1 if len(shape) == 2 else shape[0]
        self.out_shape = (*shape[:-2], h * model.scale, w * model.scale)

    def read(self, a: int, b: int) -> np.ndarray:
        x = self.arr[()][None] if len(self.shape) == 2 else self.arr[a:b]
        x = np.array(x, dtype=np.float32).reshape(b - a, -1, *self.shape[-2:])  # a writable copy
        bad = np.flatnonzero(~np.isfinite(x).reshape(len(x), -1).all(1))
        expect(not bad.size, f"{self.where}: image {a + int(bad[0]) if bad.size else ''} has NaN/inf pixels; "
                             f"fill or mask them first")
        return x

    def write(self, dst: Any, a: int, sr: np.ndarray) -> None:
        if len(self.shape) == 2:
            dst[...] = sr[0, 0]
        else:
            dst[a:a + len(sr)] = sr.reshape(len(sr), *self.out_shape[1:])


def _upscale_into(model: Upscaler, images: _Images, dst: Any, batch_size: int, progress: bool) -> None:
    from tqdm import tqdm

    with tqdm(total=images.n, desc=Path(images.where).name, unit="img", disable=None if progress else True) as bar:
        for a in range(0, images.n, batch_size):
            b = min(a + batch_size, images.n)
            images.write(dst, a, model(images.read(a, b)))
            bar.update(b - a)


def _history(model: Upscaler) -> str:
    return (f"lensearch {__version__} upscale: {model.scale}x by {model.name} ({model.backend}) from export "
            f"{model.dir.resolve().name}")


# ------------------------------------------------------------------------------------------- formats
def _npy(model: Upscaler, src: Path, tmp: Path, batch_size: int, progress: bool, **_: Any) -> None:
    try:
        arr = np.load(src, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise UserError(f"{src}: unreadable .npy file ({err})") from None
    images = _Images(arr, str(src), model)
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=images.out_shape)
    _upscale_into(model, images, out, batch_size, progress)
    out.flush()
    del out


def _h5open(path: Path, mode: str = "r"):
    import h5py

    try:
        return h5py.File(path, mode, locking=False)
    except OSError as err:
        raise UserError(f"{path}: unreadable HDF5 file ({err})") from None


def _hdf5(model: Upscaler, src: Path, tmp: Path, batch_size: int, progress: bool, dataset: str | None = None,
          **_: Any) -> None:
    import h5py

    from lensearch.data.store import open_h5

    attrs = {"lensearch_upscale": _history(model), "scale": model.scale, "model_dir": str(model.dir.resolve())}
    if dataset is None:  # a lensearch data file: a copy of it plus `sr`
        open_h5(src)
        shutil.copyfile(src, tmp)
        with _h5open(src) as f, _h5open(tmp, "r+") as g:
            images = _Images(f["lr"], f"{src}:lr", model)
            if "sr" in g:
                del g["sr"]
            out = g.create_dataset("sr", shape=images.out_shape, dtype=np.float32, chunks=(1, *images.out_shape[1:]))
            out.attrs.update({**attrs, "source_dataset": "lr"})
            _upscale_into(model, images, out, batch_size, progress)
        return
    with _h5open(src) as f:
        expect(isinstance(f.get(dataset), h5py.Dataset), f"{src}: no dataset {dataset!r}; datasets: "
               f"{', '.join(k for k in _dataset_names(f)) or 'none'}")
        images = _Images(f[dataset], f"{src}:{dataset}", model)
        with _h5open(tmp, "w") as g:
            g.attrs.update(dict(f.attrs))
            out = g.create_dataset(dataset, shape=images.out_shape, dtype=np.float32)
            out.attrs.update({**attrs, "source_dataset": dataset})
            _upscale_into(model, images, out, batch_size, progress)


def _dataset_names(f) -> list[str]:
    import h5py

    names: list[str] = []
    f.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
    return names


def _fits(model: Upscaler, src: Path, tmp: Path, batch_size: int, progress: bool, hdu: int | str | None = None,
          **_: Any) -> None:
    from astropy.io import fits

    try:
        hdul = fits.open(src, memmap=False)
    except (OSError, ValueError, EOFError) as err:
        raise UserError(f"{src}: unreadable FITS file ({err})") from None
    with hdul:
        index = _pick_hdu(hdul, hdu, src)
        where = f"{src}[{index}]"
        try:
            data = hdul[index].data
        except (OSError, ValueError, TypeError) as err:
            raise UserError(f"{where}: unreadable image data ({err})") from None
        images = _Images(data, where, model)
        out = np.empty(images.out_shape, dtype=np.float32)
        _upscale_into(model, images, out, batch_size, progress)
        header = hdul[index].header.copy()
        for key in ("BSCALE", "BZERO", "BLANK", "CHECKSUM", "DATASUM"):
            header.remove(key, ignore_missing=True, remove_all=True)
        rescale_wcs(header, model.scale)
        header.add_history(_history(model) + "; WCS rescaled, pixel units unchanged")
        hdul[index] = (fits.PrimaryHDU if index == 0 else fits.ImageHDU)(data=out, header=header)
        hdul.writeto(tmp)


def _pick_hdu(hdul, hdu: int | str | None, src: Path) -> int:
    """The image HDU to upscale: ``hdu`` (index or EXTNAME), else the file's only image HDU."""
    images = [i for i, h in enumerate(hdul) if h.is_image and h.header.get("NAXIS", 0) >= 2]
    listing = ", ".join(f"{i} {hdul[i].name or '(no name)'}" for i in images)
    if hdu is None:
        expect(images, f"{src}: no image HDU with at least 2 axes")
        expect(len(images) == 1, f"{src}: {len(images)} image HDUs ({listing}); choose one with --hdu")
        return images[0]
    try:
        index = hdu if isinstance(hdu, int) else hdul.index_of(hdu)
    except KeyError:
        index = None
    expect(index in images, f"{src}: --hdu {hdu} is not an image HDU; image HDUs: {listing or 'none'}")
    return index


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


WRITERS: dict[str, Callable[..., None]] = {"npy": _npy, "hdf5": _hdf5, "fits": _fits}


# ------------------------------------------------------------------------------------------- naming
def file_suffix(path: Path) -> str:
    """The known suffix ``path`` ends with (longest match, case-insensitive), else ``""``."""
    name = path.name.lower()
    return max((s for s in SUFFIXES if name.endswith(s)), key=len, default="")


def file_kind(path: Path) -> str:
    """``npy``, ``hdf5`` or ``fits`` from the file name; :class:`UserError` otherwise."""
    suffix = file_suffix(Path(path))
    expect(suffix, f"{path}: unknown file type; expected .npy, .h5/.hdf5/.hdf or .fits/.fit/.fts (optionally .gz)")
    return SUFFIXES[suffix]
