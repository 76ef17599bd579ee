"""The HDF5 store's format (format_version 1, see docs/architecture.md): validating, opening and reading a file.

* :func:`open_h5` validates a file and returns an :class:`H5Info`; every problem is a one-line
  :class:`~lensearch.errors.UserError` naming the file and the dataset.
* :func:`split_indices` and :func:`iter_batches` read a split's rows (in blocks).

Writing is :mod:`lensearch.data.writer`; a file is written to ``FILE.partial`` (:func:`partial_path`) and
renamed when complete.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from lensearch.errors import UserError

__all__ = ["BASE_DATASETS", "DEFAULT_ATTRS", "FORMAT_VERSION", "IMAGE_KEYS", "REQUIRED_DATASETS", "SPLITS",
           "H5Info", "h5open", "iter_batches", "missing_datasets", "open_h5", "partial_path", "read_rows",
           "split_indices"]

FORMAT_VERSION = 1
SPLITS = ("train", "val", "test")
IMAGE_KEYS = ("lr", "hr", "hr_clean")
BASE_DATASETS = ("hr", "lr", "label", "params")  # what H5Writer creates first
REQUIRED_DATASETS = (*BASE_DATASETS, *(f"split/{s}" for s in SPLITS))

DEFAULT_ATTRS: dict[str, Any] = {
    "preset": "", "seed": -1, "source": "", "lr_mode": "", "units": "",
    "pixel_scale_hr": math.nan, "pixel_scale_lr": math.nan, "psf_fwhm_hr": math.nan, "psf_fwhm_lr": math.nan,
}


def partial_path(path: Path) -> Path:
    return path.with_name(path.name + ".partial")


def h5open(path: str | os.PathLike) -> h5py.File:
    return h5py.File(path, "r", locking=False)


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _str_list(value: Any) -> list[str]:
    value = _plain(value)
    if isinstance(value, str):
        value = json.loads(value) if value.strip().startswith("[") else [value]
    return [str(v) for v in value]


@dataclass
class H5Info:
    """What :func:`open_h5` found in a valid store file."""

    path: Path
    n: int
    hr_shape: tuple[int, int]
    lr_shape: tuple[int, int]
    scale: int
    has_clean: bool
    splits: dict[str, int]
    class_names: list[str]
    param_names: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)


def missing_datasets(f: h5py.File) -> list[str]:
    """The datasets of :data:`REQUIRED_DATASETS` that the open file ``f`` lacks."""
    return [name for name in REQUIRED_DATASETS if not isinstance(f.get(name), h5py.Dataset)]


def open_h5(path: str | os.PathLike, sample_check: int = 4) -> H5Info:
    """Validate a store file and describe it; any problem raises a one-line UserError.

    ``sample_check`` images of ``lr``/``hr`` (first, last, evenly spaced) are checked for NaN/inf;
    :func:`check_finite` does the full scan.
    """
    p = Path(path)
    if not p.exists():
        hint = " (an interrupted write left FILE.partial)" if partial_path(p).exists() else ""
        raise UserError(f"{p}: no such file{hint}")
    if p.is_dir() or not h5py.is_hdf5(p):
        raise UserError(f"{p}: not an HDF5 file")
    try:
        f = h5open(p)
    except OSError as err:
        raise UserError(f"{p}: cannot be opened as HDF5 ({err})") from None
    with f:
        return _validate(p, f, sample_check)


def _validate(p: Path, f: h5py.File, sample_check: int) -> H5Info:
    def need(cond: object, msg: str) -> None:
        if not cond:
            raise UserError(f"{p}: {msg}")

    attrs = {k: _plain(v) for k, v in f.attrs.items()}
    missing = missing_datasets(f)
    if not (attrs.get("complete") is True or attrs.get("complete") == 1):
        # H5Writer creates hr, lr, label and params first and marks the file complete last, so a file
        # without them was never a lensearch file being written, whatever else it holds
        if set(missing) & set(BASE_DATASETS):
            raise UserError(f"{p}: not a lensearch data file (missing datasets: {', '.join(missing)})")
        raise UserError(f"{p}: looks interrupted (attribute 'complete' is missing or false); re-create the file")
    need(attrs.get("format_version") == FORMAT_VERSION,
         f"attribute 'format_version': expected {FORMAT_VERSION}, got {attrs.get('format_version')!r}")
    need(not missing, f"dataset '{missing[0] if missing else ''}' is missing")
    hr, lr, label, params = f["hr"], f["lr"], f["label"], f["params"]
    for name, ds in (("hr", hr), ("lr", lr)):
        need(ds.ndim == 4 and ds.shape[1] == 1,
             f"dataset '{name}': expected shape (N,1,H,W), got {ds.shape}")
        need(ds.dtype.kind == "f", f"dataset '{name}': expected float32, got {ds.dtype}")
    n = hr.shape[0]
    need(n > 0, "dataset 'hr' has no rows")
    need(lr.shape[0] == n, f"dataset 'lr' has {lr.shape[0]} rows but 'hr' has {n}")
    need(label.shape == (n,) and label.dtype.kind in "iu",
         f"dataset 'label': expected ({n},) integers, got {label.shape} {label.dtype}")
    need(params.ndim == 2 and params.shape[0] == n, f"dataset 'params': expected shape ({n},K), got {params.shape}")
    try:
        scale = int(attrs["scale"])
    except (KeyError, TypeError, ValueError):
        raise UserError(f"{p}: attribute 'scale': expected an integer, got {attrs.get('scale')!r}") from None
    hr_shape, lr_shape = tuple(hr.shape[2:]), tuple(lr.shape[2:])
    need(hr_shape == (scale * lr_shape[0], scale * lr_shape[1]),
         f"dataset 'hr': expected {scale} x lr size = {(scale * lr_shape[0], scale * lr_shape[1])}, "
         f"got {hr_shape}")
    has_clean = "hr_clean" in f
    if has_clean:
        need(f["hr_clean"].shape == hr.shape,
             f"dataset 'hr_clean': expected shape {hr.shape}, got {f['hr_clean'].shape}")
    splits = {}
    for s in SPLITS:
        rows = f[f"split/{s}"][()]
        need(rows.ndim == 1 and rows.dtype.kind in "iu", f"dataset 'split/{s}': expected 1-D integers")
        need(rows.size == 0 or (rows.min() >= 0 and rows.max() < n),
             f"dataset 'split/{s}': row indices must lie in 0..{n - 1}, got "
             f"{rows.min() if rows.size else ''}..{rows.max() if rows.size else ''}")
        splits[s] = int(rows.size)
    for i in np.unique(np.linspace(0, n - 1, max(sample_check, 0)).astype(int)):
        for name in ("lr", "hr"):
            need(np.isfinite(f[name][i]).all(), f"dataset '{name}': row {i} contains NaN or inf")
    class_names = _str_list(attrs.get("class_names", "[]"))
    param_names = _str_list(params.attrs.get("names", []))
    need(len(param_names) == params.shape[1],
         f"dataset 'params': attribute 'names' lists {len(param_names)} names for {params.shape[1]} columns")
    return H5Info(path=p, n=n, hr_shape=hr_shape, lr_shape=lr_shape, scale=scale, has_clean=has_clean,
                  splits=splits, class_names=class_names, param_names=param_names, attrs=attrs)


def split_indices(path: str | os.PathLike, split: str) -> np.ndarray:
    """Sorted row indices of ``split`` ("train", "val", "test" or "all")."""
    if split not in (*SPLITS, "all"):
        raise UserError(f"split: expected one of train, val, test, all, got {split!r}")
    with h5open(path) as f:
        return np.arange(f["hr"].shape[0]) if split == "all" else f[f"split/{split}"][()].astype(np.int64)


def read_rows(ds: h5py.Dataset, rows: np.ndarray, block: int = 1024) -> np.ndarray:
    """``ds[rows]`` for sorted unique rows, in blocks; a dense block is read as one slice (fast in h5py)."""
    out = np.empty((rows.size, *ds.shape[1:]), dtype=ds.dtype)
    for a in range(0, rows.size, block):
        r = rows[a:a + block]
        lo, hi = int(r[0]), int(r[-1]) + 1
        out[a:a + r.size] = ds[lo:hi][r - lo] if hi - lo <= 2 * r.size else ds[r]
    return out


def iter_batches(path: str | os.PathLike, split: str = "all", batch_size: int = 256,
                 keys: Sequence[str] = ("lr", "hr"), max_images: int | None = None) -> Iterator[dict[str, np.ndarray]]:
    """Yield dicts of numpy arrays (keys present in the file, plus "index") over a split (its first
    ``max_images`` rows when given), in row order."""
    rows = split_indices(path, split)
    if max_images:
        rows = rows[:max_images]
    with h5open(path) as f:
        keys = [k for k in keys if k in f]
        for a in range(0, rows.size, batch_size):
            r = rows[a:a + batch_size]
            yield {"index": r, **{k: read_rows(f[k], r) for k in keys}}
