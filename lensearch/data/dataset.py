"""The torch ``Dataset`` over one split of a store file, with aligned random patches and augmentation.

:class:`SRDataset` opens its h5py handle lazily in each process, so it is safe with DataLoader workers and
DDP and pickles without an open handle.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

from lensearch.data.h5format import H5Info, h5open, open_h5, read_rows, split_indices
from lensearch.errors import UserError

__all__ = ["Augment", "SRDataset", "check_patch_size", "clear_memory_cache", "random_patch"]

Augment = Callable[[dict[str, np.ndarray], np.random.Generator], dict[str, np.ndarray]]

# Splits read into RAM (``in_memory=True``), kept for the life of the process: a search's trial process runs
# trial after trial (Tune's reuse_actors, search/tuner.py), and every trial would otherwise read the same split
# again. Keyed by the file's identity (resolved path, size, modification time, inode: a rewritten file is read
# anew) and what was read (split, arrays); only the most recent file's entries are kept.
_MEMORY: dict[tuple, dict[str, np.ndarray]] = {}


def _file_identity(path: str) -> tuple:
    stat = os.stat(path)
    return os.path.realpath(path), stat.st_size, stat.st_mtime_ns, stat.st_ino


def _read_split(path: str, split: str, rows: np.ndarray, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    """``keys`` of ``rows`` as float32 arrays, from this process's cache when the same file's split was read
    before. The arrays are shared by every dataset that asks for them: treat them as read-only."""
    identity = _file_identity(path)
    key = (identity, split, keys)
    cached = _MEMORY.get(key)
    if cached is None:
        with h5open(path) as f:
            cached = {k: read_rows(f[k], rows).astype(np.float32, copy=False) for k in keys}
        for old in [k for k in _MEMORY if k[0] != identity]:  # another file (or this one rewritten): let it go
            del _MEMORY[old]
        _MEMORY[key] = cached
    return cached


def clear_memory_cache() -> None:
    """Forget every split read into RAM by this process."""
    _MEMORY.clear()


def check_patch_size(patch_size: int, info: H5Info, where: str = "") -> int:
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
    and the DataLoader's worker seeding. ``in_memory=True`` reads the split into RAM once per process (a later
    dataset over the same, unchanged file and split shares those arrays).
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
            self._memory = _read_split(self.path, split, self.rows, self.keys)

    def __len__(self) -> int:
        return int(self.rows.size)

    def _datasets(self) -> dict[str, h5py.Dataset]:
        """This process's open datasets (looking a dataset up by name costs ~10x a row read: cache them)."""
        if self._file is None or self._pid != os.getpid():
            self._file, self._pid = h5open(self.path), os.getpid()
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
