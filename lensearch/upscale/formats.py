"""The file formats ``lensearch upscale`` reads and writes: ``.npy``, HDF5 and FITS, streamed in batches.

* ``.npy``: ``(h,w)`` one image, ``(K,h,w)`` K images (so ``(1,h,w)`` is one), or ``(N,1,h,w)``; written
  as ``.npy`` of the same rank with ``s*h, s*w``.
* HDF5 (``.h5``/``.hdf5``/``.hdf``): a lensearch data file is copied whole and gets a dataset ``sr``
  ``(N,1,s*h,s*w)`` upscaled from ``lr`` (row i of ``sr`` is row i of ``lr``, next to ``hr``); with
  ``dataset=NAME`` any file's dataset NAME (same layouts as ``.npy``) is upscaled into a new file holding
  only that dataset, under the same name, plus the input's file attributes.
* FITS (``.fits``/``.fit``/``.fts``, optionally ``.gz`` or fpack's ``.fz``; :mod:`lensearch.data.fits`): the
  chosen image HDU (``hdu=`` index, negative from the end, or EXTNAME, needed when the file has several;
  2-D, or 3-D as a stack of planes) is replaced by its SR image, every other HDU is kept; a tile-compressed
  HDU (``.fz``) is compressed again, losslessly (GZIP_2, no quantization). The header is kept and updated
  for the new sampling (:func:`~lensearch.data.fits.rescale_wcs`) with a HISTORY card. Pixel values stay
  in the input's units (no flux rescaling: the models are trained on surface brightness, which does not
  depend on the pixel size).

Output pixels are float32. Images must be finite and at least ``min_side`` px (2, see
:mod:`lensearch.export.graphs`) on each side. Each writer fills a temporary file the caller renames.
"""

from __future__ import annotations

import math
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from lensearch import __version__
from lensearch.data.fits import FITS_SUFFIXES, open_fits, pick_image_hdu, pixel_scale, rescale_wcs
from lensearch.errors import UserError, expect
from lensearch.upscale.runtime import Upscaler, as_float

__all__ = ["SUFFIXES", "WRITERS", "file_kind", "file_suffix", "rescale_wcs"]

PIXEL_SCALE_RTOL = 0.01  # relative pixel-scale difference from the training data that is worth a warning
SUFFIXES = {".npy": "npy", ".h5": "hdf5", ".hdf5": "hdf5", ".hdf": "hdf5", **dict.fromkeys(FITS_SUFFIXES, "fits")}


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


def _check_pixel_scale(model: Upscaler, where: str, scale: float) -> None:
    """One warning line when the input's pixel scale and the model's training LR pixel scale are both known
    and differ by more than PIXEL_SCALE_RTOL: the model learned one sampling of the sky."""
    trained = model.training_pixel_scale
    if math.isfinite(scale) and math.isfinite(trained) and abs(scale / trained - 1) > PIXEL_SCALE_RTOL:
        print(f"lensearch upscale: warning: {where}: pixel scale {scale:.4g}\"/px, but {model.name} was trained on "
              f"LR images of {trained:.4g}\"/px; its output at another sampling is not validated", file=sys.stderr)


def _history(model: Upscaler) -> str:
    return (f"lensearch {__version__} upscale: {model.scale}x by {model.name} ({model.backend}) from export "
            f"{model.dir.resolve().name}")


# ------------------------------------------------------------------------------------------- formats
def _npy(model: Upscaler, src: Path, tmp: Path, batch_size: int, progress: bool, **_: Any) -> None:
    try:
        arr = np.load(src, mmap_mode="r", allow_pickle=False)
    except Exception as err:  # a damaged header fails in many ways (ValueError, EOFError, tokenize errors, ...)
        reason = (str(err).strip().splitlines() or [""])[0]
        if not isinstance(err, (OSError, ValueError, EOFError)):
            reason = f"{type(err).__name__}: {reason}"
        raise UserError(f"{src}: unreadable .npy file ({reason})") from None
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

    from lensearch.data.h5format import BASE_DATASETS, missing_datasets, open_h5

    attrs = {"lensearch_upscale": _history(model), "scale": model.scale, "model_dir": str(model.dir.resolve())}
    if dataset is None:  # a lensearch data file: a copy of it plus `sr`
        with _h5open(src) as f:
            missing, names = missing_datasets(f), _dataset_names(f)
        expect(not set(missing) & set(BASE_DATASETS),
               f"{src}: not a lensearch data file (missing datasets: {', '.join(missing)}); to upscale one of its "
               f"datasets give --dataset NAME (datasets: {', '.join(names) or 'none'})")
        info = open_h5(src)
        _check_pixel_scale(model, f"{src}:lr", as_float(info.attrs.get("pixel_scale_lr")))
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

    with open_fits(src) as hdul:
        index = pick_image_hdu(hdul, hdu, src)
        where, chosen = f"{src}[{index}]", hdul[index]
        _check_pixel_scale(model, where, pixel_scale(chosen.header))
        images = _Images(chosen.data, where, model)
        out = np.empty(images.out_shape, dtype=np.float32)
        _upscale_into(model, images, out, batch_size, progress)
        header = chosen.header.copy()
        for key in ("BSCALE", "BZERO", "BLANK", "CHECKSUM", "DATASUM"):
            header.remove(key, ignore_missing=True, remove_all=True)
        rescale_wcs(header, model.scale)
        header.add_history(_history(model) + "; WCS rescaled, pixel units unchanged")
        if isinstance(chosen, fits.CompImageHDU):  # fpack (.fz): compressed again, losslessly
            hdul[index] = fits.CompImageHDU(data=out, header=header, compression_type="GZIP_2", quantize_level=0.0)
        else:
            hdul[index] = (fits.PrimaryHDU if index == 0 else fits.ImageHDU)(data=out, header=header)
        hdul.writeto(tmp)


WRITERS: dict[str, Callable[..., None]] = {"npy": _npy, "hdf5": _hdf5, "fits": _fits}


# ------------------------------------------------------------------------------------------- naming
def file_suffix(path: Path) -> str:
    """The known suffix ``path`` ends with (longest match, case-insensitive), else ``""``."""
    name = path.name.lower()
    return max((s for s in SUFFIXES if name.endswith(s)), key=len, default="")


def file_kind(path: Path) -> str:
    """``npy``, ``hdf5`` or ``fits`` from the file name; :class:`UserError` otherwise."""
    suffix = file_suffix(Path(path))
    expect(suffix, f"{path}: unknown file type; expected .npy, .h5/.hdf5/.hdf or .fits/.fit/.fts (optionally "
                   f".gz or .fz)")
    return SUFFIXES[suffix]
