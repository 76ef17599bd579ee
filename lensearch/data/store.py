"""The HDF5 store (format_version 1, see docs/architecture.md), one import for all of it.

The store lives in one module per job; this module re-exports their public names, so
``from lensearch.data.store import ...`` keeps working:

* :mod:`lensearch.data.h5format`: the format, :func:`open_h5` (validate and describe a file, one-line
  :class:`~lensearch.errors.UserError` for any problem), :func:`split_indices`, :func:`iter_batches`;
* :mod:`lensearch.data.writer`: :class:`H5Writer` (stream rows into ``FILE.partial``, splits and attributes
  on a clean exit, ``complete`` last, then rename) and :func:`write_h5` (arrays already in memory);
* :mod:`lensearch.data.splits`: :func:`make_splits` (seeded, stratified by label);
* :mod:`lensearch.data.stats`: :func:`scan_values`, :func:`check_finite`, :func:`train_stats` (streamed);
* :mod:`lensearch.data.dataset`: :class:`SRDataset`, the torch ``Dataset`` over one split (lazy h5py handle
  per process, safe with DataLoader workers and DDP), with :func:`check_patch_size` and :func:`random_patch`.
"""

from __future__ import annotations

from lensearch.data.dataset import Augment, SRDataset, check_patch_size, random_patch
from lensearch.data.h5format import (DEFAULT_ATTRS, FORMAT_VERSION, IMAGE_KEYS, SPLITS, H5Info, iter_batches,
                                     open_h5, split_indices)
from lensearch.data.splits import make_splits
from lensearch.data.stats import check_finite, scan_values, train_stats
from lensearch.data.writer import H5Writer, write_h5

__all__ = ["DEFAULT_ATTRS", "FORMAT_VERSION", "IMAGE_KEYS", "SPLITS", "Augment", "H5Info", "H5Writer",
           "SRDataset", "check_finite", "check_patch_size", "iter_batches", "make_splits", "open_h5",
           "random_patch", "scan_values", "split_indices", "train_stats", "write_h5"]
