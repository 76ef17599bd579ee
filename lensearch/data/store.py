"""The HDF5 store (format_version 1, see docs/architecture.md): write, validate, open, read.

* :class:`H5Writer` streams blocks of rows into ``FILE.partial``; on a clean exit it writes the stratified
  splits and the attributes, sets ``complete`` last and renames to ``FILE``; on an exception it deletes the
  partial file. :func:`write_h5` does the same for arrays already in memory.
* :func:`open_h5` validates a file and returns an :class:`H5Info`; every problem is a one-line
  :class:`~lensearch.errors.UserError` naming the file and the dataset.
* :class:`SRDataset` is the torch ``Dataset`` over one split; it opens its h5py handle lazily in each
  process, so it is safe with DataLoader workers and DDP and pickles without an open handle.
* :func:`iter_batches`, :func:`train_stats` and :func:`check_finite` stream a split in blocks.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

from lensearch.errors import UserError

__all__ = ["FORMAT_VERSION", "SPLITS", "H5Info", "H5Writer", "SRDataset", "check_finite", "iter_batches",
           "make_splits", "open_h5", "scan_values", "split_indices", "train_stats", "write_h5"]

FORMAT_VERSION = 1
SPLITS = ("train", "val", "test")
IMAGE_KEYS = ("lr", "hr", "hr_clean")

DEFAULT_ATTRS: dict[str, Any] = {
    "preset": "", "seed": -1, "source": "", "lr_mode": "", "units": "",
    "pixel_scale_hr": math.nan, "pixel_scale_lr": math.nan, "psf_fwhm_hr": math.nan, "psf_fwhm_lr": math.nan,
}


def _size2(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)):
        return int(size), int(size)
    h, w = size
    return int(h), int(w)


def _partial_path(path: Path) -> Path:
    return path.with_name(path.name + ".partial")


# --------------------------------------------------------------------------------------------- splits
def make_splits(labels: np.ndarray, fractions: Sequence[float] = (0.8, 0.1, 0.1),
                seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded splits stratified by label: ``{"train","val","test"}`` -> sorted int64 row indices.

    Rows are shuffled within each class and interleaved by their relative rank in the class, so every
    prefix of the order has (nearly) the class mix of the whole; the order is then cut at the global
    fractions. A split with a positive fraction gets at least one row when there are enough rows.
    """
    fr = [float(f) for f in fractions]
    if len(fr) != 3 or any(not math.isfinite(f) or f < 0 for f in fr) or abs(sum(fr) - 1) > 1e-6:
        raise UserError(f"split fractions: expected three non-negative numbers (train, val, test) summing "
                        f"to 1, got {tuple(fractions)}")
    labels = np.asarray(labels).reshape(-1)
    n = labels.size
    rng = np.random.default_rng(seed)
    keys = np.empty(n)
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        keys[rng.permutation(rows)] = (np.arange(rows.size) + rng.random()) / rows.size
    order = np.lexsort((rng.random(n), keys))
    n_val, n_test = (int(round(f * n)) for f in fr[1:])
    if n >= 3:
        n_val, n_test = (max(k, 1) if f > 0 else k for k, f in zip((n_val, n_test), fr[1:]))
    n_train = n - n_val - n_test
    if n_train < 0 or (fr[0] > 0 and n_train == 0 and n > 0):
        raise UserError(f"split fractions {tuple(fractions)} leave no training rows out of {n}")
    cuts = np.split(order, [n_train, n_train + n_val])
    return {name: np.sort(part).astype(np.int64) for name, part in zip(SPLITS, cuts)}


# --------------------------------------------------------------------------------------------- writing
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
        self.partial = _partial_path(self.path)
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


# --------------------------------------------------------------------------------------------- reading
def _h5open(path: str | os.PathLike) -> h5py.File:
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


def open_h5(path: str | os.PathLike, sample_check: int = 4) -> H5Info:
    """Validate a store file and describe it; any problem raises a one-line UserError.

    ``sample_check`` images of ``lr``/``hr`` (first, last, evenly spaced) are checked for NaN/inf;
    :func:`check_finite` does the full scan.
    """
    p = Path(path)
    if not p.exists():
        hint = " (an interrupted write left FILE.partial)" if _partial_path(p).exists() else ""
        raise UserError(f"{p}: no such file{hint}")
    if p.is_dir() or not h5py.is_hdf5(p):
        raise UserError(f"{p}: not an HDF5 file")
    try:
        f = _h5open(p)
    except OSError as err:
        raise UserError(f"{p}: cannot be opened as HDF5 ({err})") from None
    with f:
        return _validate(p, f, sample_check)


def _validate(p: Path, f: h5py.File, sample_check: int) -> H5Info:
    def need(cond: object, msg: str) -> None:
        if not cond:
            raise UserError(f"{p}: {msg}")

    attrs = {k: _plain(v) for k, v in f.attrs.items()}
    need(attrs.get("complete") is True or attrs.get("complete") == 1,
         "looks interrupted (attribute 'complete' is missing or false); re-create the file")
    need(attrs.get("format_version") == FORMAT_VERSION,
         f"attribute 'format_version': expected {FORMAT_VERSION}, got {attrs.get('format_version')!r}")
    for name in ("hr", "lr", "label", "params", *(f"split/{s}" for s in SPLITS)):
        need(isinstance(f.get(name), h5py.Dataset), f"dataset '{name}' is missing")
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
    with _h5open(path) as f:
        return np.arange(f["hr"].shape[0]) if split == "all" else f[f"split/{split}"][()].astype(np.int64)


def _read_rows(ds: h5py.Dataset, rows: np.ndarray, block: int = 1024) -> np.ndarray:
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
    with _h5open(path) as f:
        keys = [k for k in keys if k in f]
        for a in range(0, rows.size, batch_size):
            r = rows[a:a + batch_size]
            yield {"index": r, **{k: _read_rows(f[k], r) for k in keys}}


def scan_values(path: str | os.PathLike, max_images: int | None = None,
                batch_size: int = 256) -> dict[str, dict[str, Any]]:
    """Per image dataset (``lr``, ``hr``, ``hr_clean``): finite min, max and mean, and ``nonfinite`` = the
    number of images containing NaN/inf. All rows, or ``max_images`` evenly spaced ones."""
    out: dict[str, dict[str, Any]] = {}
    with _h5open(path) as f:
        n = f["hr"].shape[0]
        rows = np.arange(n) if max_images is None or max_images >= n else \
            np.unique(np.linspace(0, n - 1, max_images).astype(np.int64))
        for name in IMAGE_KEYS:
            if name not in f:
                continue
            lo, hi, total, count, bad = math.inf, -math.inf, 0.0, 0, 0
            for a in range(0, rows.size, batch_size):
                x = _read_rows(f[name], rows[a:a + batch_size]).reshape(-1, int(np.prod(f[name].shape[1:])))
                ok = np.isfinite(x)
                bad += int((~ok).any(axis=1).sum())
                v = x[ok] if not ok.all() else x
                if v.size:
                    lo, hi = min(lo, float(v.min())), max(hi, float(v.max()))
                    total += float(v.sum(dtype=np.float64))
                    count += v.size
            out[name] = {"min": lo if count else math.nan, "max": hi if count else math.nan,
                         "mean": total / count if count else math.nan, "nonfinite": bad,
                         "images": int(rows.size)}
    return out


def check_finite(path: str | os.PathLike, batch_size: int = 256) -> dict[str, int]:
    """Full scan: the number of images containing NaN/inf in ``lr``, ``hr`` (and ``hr_clean``)."""
    return {k: v["nonfinite"] for k, v in scan_values(path, batch_size=batch_size).items()}


def train_stats(path: str | os.PathLike, split: str = "train", key: str = "lr", batch_size: int = 256,
                max_sample: int = 2_000_000, seed: int = 0) -> dict[str, float]:
    """Pixel statistics of ``key`` over a split: exact mean, std, min, max (streamed) and the
    percentiles p0.1, p1, p50, p99, p99.9 from a seeded subsample of at most ``max_sample`` pixels."""
    rows = split_indices(path, split)
    if rows.size == 0:
        raise UserError(f"{path}: split '{split}' is empty, no statistics to compute")
    rng = np.random.default_rng(seed)
    total = total_sq = 0.0
    count = 0
    lo, hi = math.inf, -math.inf
    samples = []
    with _h5open(path) as f:
        ds = f[key]
        per_image = int(np.prod(ds.shape[1:]))
        keep = min(1.0, max_sample / (rows.size * per_image))
        for a in range(0, rows.size, batch_size):
            x = _read_rows(ds, rows[a:a + batch_size]).astype(np.float64).ravel()
            total += x.sum()
            total_sq += np.square(x).sum()
            count += x.size
            lo, hi = min(lo, x.min()), max(hi, x.max())
            samples.append(x if keep >= 1 else x[rng.random(x.size) < keep])
    mean = total / count
    std = math.sqrt(max(total_sq / count - mean**2, 0.0))
    q = np.percentile(np.concatenate(samples), [0.1, 1, 50, 99, 99.9])
    return {"mean": float(mean), "std": std, "min": float(lo), "max": float(hi), "p0.1": float(q[0]),
            "p1": float(q[1]), "p50": float(q[2]), "p99": float(q[3]), "p99.9": float(q[4]),
            "n_images": int(rows.size), "n_pixels": int(count)}


# --------------------------------------------------------------------------------------------- dataset
Augment = Callable[[dict[str, np.ndarray], np.random.Generator], dict[str, np.ndarray]]


def check_patch_size(patch_size: int, info: "H5Info", where: str = "") -> int:
    """``patch_size`` if it fits ``info``'s images (0 = whole images); a one-line :class:`UserError` if not."""
    if not patch_size:
        return 0
    prefix = f"{where}: " if where else ""
    if patch_size % info.scale:
        raise UserError(f"{prefix}train.patch_size: expected a multiple of the data's scale {info.scale}, "
                        f"got {patch_size}")
    if patch_size > min(info.hr_shape):
        raise UserError(f"{prefix}train.patch_size: expected at most the HR image size {min(info.hr_shape)} px, "
                        f"got {patch_size}")
    return int(patch_size)


def random_patch(sample: dict[str, np.ndarray], lr_patch: int, scale: int,
                 rng: np.random.Generator) -> dict[str, np.ndarray]:
    """An aligned random crop: ``lr_patch`` px of every LR array and ``lr_patch * scale`` px of the HR ones."""
    h, w = sample["lr"].shape[-2:]
    y, x = int(rng.integers(h - lr_patch + 1)), int(rng.integers(w - lr_patch + 1))
    out = {}
    for key, value in sample.items():
        if key == "lr":
            out[key] = value[..., y:y + lr_patch, x:x + lr_patch]
        else:
            hp = lr_patch * scale
            out[key] = value[..., y * scale:y * scale + hp, x * scale:x * scale + hp]
    return out


class SRDataset(Dataset):
    """One split of a store file as ``{"lr": (1,h,w), "hr": (1,H,W)[, "hr_clean"], "index"}`` items.

    ``patch_size`` (HR pixels, a multiple of the file's scale; 0 = whole images) returns a random aligned
    crop instead: an HR patch of ``patch_size`` px and the LR patch of ``patch_size / scale`` px that covers
    the same sky. Training on random patches multiplies the optimizer steps a CPU can take per second.

    ``augment(sample, rng)`` (see :func:`lensearch.data.transforms.build_augment`) gets the numpy sample and
    a generator seeded from torch's RNG, so augmentations differ per epoch and follow ``torch.manual_seed``
    and the DataLoader's worker seeding. ``in_memory=True`` reads the split into RAM once.
    """

    def __init__(self, path: str | os.PathLike, split: str = "train", augment: Augment | None = None,
                 with_clean: bool = False, in_memory: bool = False, patch_size: int = 0):
        self.info = open_h5(path)
        self.patch_size = check_patch_size(patch_size, self.info, str(path))
        self.path = str(self.info.path)
        self.split = split
        self.rows = split_indices(self.path, split)
        self.augment = augment
        self.keys = ("lr", "hr", "hr_clean") if with_clean and self.info.has_clean else ("lr", "hr")
        self._memory: dict[str, np.ndarray] | None = None
        self._file: h5py.File | None = None
        self._ds: dict[str, h5py.Dataset] = {}
        self._pid: int | None = None
        if in_memory:
            with _h5open(self.path) as f:
                self._memory = {k: _read_rows(f[k], self.rows).astype(np.float32, copy=False) for k in self.keys}

    def __len__(self) -> int:
        return int(self.rows.size)

    def _datasets(self) -> dict[str, h5py.Dataset]:
        """This process's open datasets (looking a dataset up by name costs ~10x a row read: cache them)."""
        if self._file is None or self._pid != os.getpid():
            self._file, self._pid = _h5open(self.path), os.getpid()
            self._ds = {k: self._file[k] for k in self.keys}
        return self._ds

    def __getitem__(self, i: int) -> dict[str, Any]:
        if self._memory is not None:
            sample = {k: v[i] for k, v in self._memory.items()}
        else:
            ds, row = self._datasets(), int(self.rows[i])
            sample = {k: d[row] for k, d in ds.items()}
        if self.patch_size or self.augment is not None:
            rng = np.random.default_rng(int(torch.randint(0, 2**62, ()).item()))
            if self.patch_size:
                sample = random_patch(sample, self.patch_size // self.info.scale, self.info.scale, rng)
            if self.augment is not None:
                sample = self.augment(sample, rng)
        out: dict[str, Any] = {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32))
                               for k, v in sample.items()}
        out["index"] = int(self.rows[i])
        return out

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_file"], state["_pid"], state["_ds"] = None, None, {}
        return state

    def close(self) -> None:
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
        self._file, self._ds = None, {}

    def __del__(self) -> None:  # pragma: no cover - best effort
        try:
            self.close()
        except Exception:
            pass
