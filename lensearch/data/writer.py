"""Writing a store file: :class:`H5Writer` streams blocks of rows, :func:`write_h5` writes arrays in memory.

:class:`H5Writer` streams blocks of rows into ``FILE.partial``; on a clean exit it writes the stratified
splits (:func:`~lensearch.data.splits.make_splits`) and the attributes, sets ``complete`` last and renames
to ``FILE``; on an exception it deletes the partial file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from lensearch.data.h5format import DEFAULT_ATTRS, FORMAT_VERSION, partial_path
from lensearch.data.splits import make_splits
from lensearch.errors import UserError

__all__ = ["H5Writer", "write_h5"]


def _size2(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)):
        return int(size), int(size)
    h, w = size
    return int(h), int(w)


def _attr_value(value: Any) -> Any:
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value)
    if value is None:
        return ""
    return value


class H5Writer:
    """Stream rows into a new HDF5 file; a context manager.

    ``hr_size``/``lr_size`` are ints or ``(H, W)``; ``attrs`` are the file attributes of the contract
    (``preset``, ``seed``, ``source``, ``pixel_scale_*``, ``psf_fwhm_*``, ``lr_mode``, ``units``; missing
    ones get neutral defaults). ``compression`` ("lzf", "gzip" or None) applies to the image datasets.
    """

    def __init__(self, path: str | os.PathLike, *, n: int, hr_size: int | Sequence[int],
                 lr_size: int | Sequence[int], scale: int, param_names: Sequence[str],
                 class_names: Sequence[str], with_clean: bool, attrs: Mapping[str, Any],
                 split_fractions: Sequence[float] = (0.8, 0.1, 0.1), split_seed: int = 0,
                 compression: str | None = None):
        self.path = Path(path)
        self.partial = partial_path(self.path)
        self.n = int(n)
        self.hr_size, self.lr_size, self.scale = _size2(hr_size), _size2(lr_size), int(scale)
        if self.hr_size != (self.scale * self.lr_size[0], self.scale * self.lr_size[1]):
            raise ValueError(f"hr_size {self.hr_size} is not scale {self.scale} x lr_size {self.lr_size}")
        if self.n < 1:
            raise ValueError(f"n must be positive, got {n}")
        self.param_names = [str(p) for p in param_names]
        self.class_names = [str(c) for c in class_names]
        self.with_clean = bool(with_clean)
        self.attrs = {**DEFAULT_ATTRS, **dict(attrs)}
        self.split_fractions = tuple(split_fractions)
        self.split_seed = int(split_seed)
        self.compression = compression
        make_splits(np.zeros(self.n), self.split_fractions)  # validate the fractions before any work
        self._file: h5py.File | None = None
        self._labels = np.zeros(self.n, dtype=np.int64)
        self._written = np.zeros(self.n, dtype=bool)

    def __enter__(self) -> H5Writer:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            f = self._file = h5py.File(self.partial, "w")
        except OSError as err:
            raise UserError(f"{self.path}: cannot write here ({err.strerror or err})") from None
        kw = {"dtype": "f4", "compression": self.compression}
        f.create_dataset("hr", shape=(self.n, 1, *self.hr_size), chunks=(1, 1, *self.hr_size), **kw)
        f.create_dataset("lr", shape=(self.n, 1, *self.lr_size), chunks=(1, 1, *self.lr_size), **kw)
        if self.with_clean:
            f.create_dataset("hr_clean", shape=(self.n, 1, *self.hr_size), chunks=(1, 1, *self.hr_size), **kw)
        f.create_dataset("label", shape=(self.n,), dtype="i8")
        f.create_dataset("params", shape=(self.n, len(self.param_names)), dtype="f4")
        f["params"].attrs["names"] = np.array(self.param_names, dtype=h5py.string_dtype())
        return self

    def write(self, start: int, *, hr: Any, lr: Any, label: Any, params: Any, hr_clean: Any = None) -> None:
        """Write rows ``start .. start+len(hr)-1``; images as (b,1,H,W) or (b,H,W)."""
        if self._file is None:
            raise RuntimeError("H5Writer.write() outside its `with` block")
        hr, lr = self._images(hr, self.hr_size, "hr"), self._images(lr, self.lr_size, "lr")
        b = hr.shape[0]
        stop = start + b
        if start < 0 or stop > self.n:
            raise ValueError(f"rows {start}..{stop - 1} outside 0..{self.n - 1}")
        label = np.asarray(label, dtype=np.int64).reshape(b)
        params = np.asarray(params, dtype=np.float32).reshape(b, len(self.param_names))
        if lr.shape[0] != b:
            raise ValueError(f"hr has {b} rows but lr has {lr.shape[0]}")
        if label.size and (label.min() < 0 or label.max() >= max(len(self.class_names), 1)):
            raise ValueError(f"labels must lie in 0..{len(self.class_names) - 1}")
        f = self._file
        f["hr"][start:stop] = hr
        f["lr"][start:stop] = lr
        f["label"][start:stop] = label
        f["params"][start:stop] = params
        if self.with_clean:
            if hr_clean is None:
                raise ValueError("this writer was opened with_clean=True: pass hr_clean")
            f["hr_clean"][start:stop] = self._images(hr_clean, self.hr_size, "hr_clean")
        self._labels[start:stop] = label
        self._written[start:stop] = True

    @staticmethod
    def _images(x: Any, size: tuple[int, int], name: str) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        if x.ndim == 3:
            x = x[:, None]
        if x.ndim != 4 or x.shape[1:] != (1, *size):
            raise ValueError(f"{name}: expected (b,1,{size[0]},{size[1]}), got {x.shape}")
        return x

    def _finish(self) -> None:
        f = self._file
        if not self._written.all():
            missing = np.flatnonzero(~self._written)
            raise RuntimeError(f"{self.path}: {missing.size} of {self.n} rows never written "
                               f"(first: {missing[:5].tolist()})")
        for name, rows in make_splits(self._labels, self.split_fractions, self.split_seed).items():
            f.create_dataset(f"split/{name}", data=rows)
        for key, value in self.attrs.items():
            f.attrs[key] = _attr_value(value)
        f.attrs["scale"] = self.scale
        f.attrs["class_names"] = json.dumps(self.class_names)
        f.attrs["format_version"] = FORMAT_VERSION
        f.attrs["complete"] = True
        f.close()
        self._file = None
        os.replace(self.partial, self.path)

    def __exit__(self, exc_type, exc, tb) -> bool:
        done = False
        try:
            if exc_type is None:
                self._finish()
                done = True
        finally:
            if self._file is not None:
                self._file.close()
                self._file = None
            if not done:
                self.partial.unlink(missing_ok=True)
        return False


def write_h5(path: str | os.PathLike, *, hr: Any, lr: Any, label: Any = None, params: Any = None,
             param_names: Sequence[str] = (), class_names: Sequence[str] = ("all",), hr_clean: Any = None,
             attrs: Mapping[str, Any] | None = None, split_fractions: Sequence[float] = (0.8, 0.1, 0.1),
             split_seed: int = 0, block: int = 512, compression: str | None = None) -> Path:
    """Write in-memory arrays (images (N,1,H,W) or (N,H,W)) as a complete store file; returns the path."""
    hr, lr = np.asarray(hr), np.asarray(lr)
    n = hr.shape[0]
    hr_size, lr_size = hr.shape[-2:], lr.shape[-2:]
    scale = hr_size[0] // lr_size[0]
    label = np.zeros(n, dtype=np.int64) if label is None else np.asarray(label)
    params = np.zeros((n, len(param_names)), dtype=np.float32) if params is None else np.asarray(params)
    with H5Writer(path, n=n, hr_size=hr_size, lr_size=lr_size, scale=scale, param_names=param_names,
                  class_names=class_names, with_clean=hr_clean is not None, attrs=attrs or {},
                  split_fractions=split_fractions, split_seed=split_seed, compression=compression) as w:
        for a in range(0, n, block):
            b = slice(a, a + block)
            w.write(a, hr=hr[b], lr=lr[b], label=label[b], params=params[b],
                    hr_clean=None if hr_clean is None else hr_clean[b])
    return Path(path)
