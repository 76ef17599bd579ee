"""Apply an exported model (``lensearch export``) to image files: ``.npy``, HDF5 and FITS.

:class:`Upscaler` (:mod:`~lensearch.upscale.runtime`) loads an export folder with the TorchScript or ONNX
backend, on CPU or CUDA; the graphs take raw images and return SR images in the same units (normalization
applied and inverted inside). :func:`upscale_files` (:mod:`~lensearch.upscale.files`, ``lensearch upscale
MODEL_DIR INPUT... -o OUT``) streams each file in batches through the reader/writer of its format
(:mod:`~lensearch.upscale.formats`). Nothing here imports from :mod:`lensearch.search` or
:mod:`lensearch.training`: the export folder (:mod:`lensearch.export.layout`, :func:`lensearch.export.read_export`)
is all it needs.
"""

from __future__ import annotations

from lensearch.upscale.files import output_paths, upscale_file, upscale_files
from lensearch.upscale.formats import SUFFIXES, file_kind, rescale_wcs
from lensearch.upscale.runtime import BACKENDS, Upscaler

__all__ = ["BACKENDS", "SUFFIXES", "Upscaler", "file_kind", "output_paths", "rescale_wcs", "upscale_file",
           "upscale_files"]
