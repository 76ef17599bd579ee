"""Running ``lensearch upscale MODEL_DIR INPUT... -o OUT``: where each result goes, and the loop over files.

:func:`upscale_files` checks inputs, outputs and the model before anything is written, then upscales each
file (:mod:`lensearch.upscale.formats`) into a hidden partial file renamed when complete; an existing
output is replaced only with ``overwrite``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from lensearch.errors import expect
from lensearch.upscale.formats import WRITERS, file_kind, file_suffix
from lensearch.upscale.runtime import Upscaler

__all__ = ["output_paths", "upscale_file", "upscale_files"]


def _sr_name(path: Path) -> str:
    """``image.fits.gz`` -> ``image_sr.fits.gz``."""
    cut = len(path.name) - len(file_suffix(path))
    return f"{path.name[:cut]}_sr{path.name[cut:]}"


def output_paths(inputs: Sequence[Path], out: str | os.PathLike | None) -> list[Path]:
    """Where each input's result goes: ``out`` itself for one input (unless it is a directory or a string
    ending with a separator); ``out/<input name>`` when ``out`` is a directory or there are several inputs;
    without ``out``, ``<stem>_sr<suffix>`` next to each input."""
    as_dir = out is not None and os.fspath(out).endswith(("/", os.sep))
    out = Path(out) if out is not None else None
    if out is None:
        paths = [p.with_name(_sr_name(p)) for p in inputs]
    elif len(inputs) > 1 or out.is_dir() or as_dir:
        paths = [out / p.name for p in inputs]
    else:
        expect(file_suffix(out), f"-o {out}: neither a directory nor an image file name (end it with / for a "
                                  f"new directory)")
        expect(file_kind(out) == file_kind(inputs[0]),
               f"-o {out}: a {file_kind(inputs[0])} input is written as {file_kind(inputs[0])}; give a matching "
               f"file name or a directory")
        paths = [out]
    seen: dict[Path, Path] = {}
    for src, dst in zip(inputs, paths):
        expect(dst.resolve() != src.resolve(), f"{src}: the output would overwrite the input; choose another -o")
        expect(dst.resolve() not in seen, f"{src} and {seen.get(dst.resolve())} would both be written to {dst}")
        seen[dst.resolve()] = src
    return paths


def _check_input(src: Path, dataset: str | None, hdu: int | str | None) -> str:
    """The file kind of ``src``, after checking it exists and takes the options given."""
    kind = file_kind(src)
    expect(src.is_file(), f"{src}: no such file")
    expect(dataset is None or kind == "hdf5", f"--dataset applies to HDF5 inputs, not {src}")
    expect(hdu is None or kind == "fits", f"--hdu applies to FITS inputs, not {src}")
    return kind


def upscale_file(model: Upscaler, src: Path, dst: Path, *, batch_size: int = 16, progress: bool = True,
                 dataset: str | None = None, hdu: int | str | None = None) -> Path:
    """Upscale one file into ``dst`` (written to a hidden partial file, renamed when complete)."""
    src, dst = Path(src), Path(dst)
    kind = _check_input(src, dataset, hdu)
    tmp = dst.with_name(f".partial.{dst.name}")  # keeps the suffix: astropy gzips by name
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        WRITERS[kind](model, src, tmp, batch_size, progress, dataset=dataset, hdu=hdu)
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
    return dst


def upscale_files(model_dir: str | os.PathLike, inputs: Sequence[str | os.PathLike],
                  out: str | os.PathLike | None = None, *, backend: str = "torchscript", device: str = "cpu",
                  batch_size: int = 16, dataset: str | None = None, hdu: int | str | None = None,
                  overwrite: bool = False, progress: bool = True) -> list[Path]:
    """Upscale every input with the export in ``model_dir``; returns the written paths (see
    :func:`output_paths`). Inputs, outputs and the model are all checked before anything is written."""
    expect(batch_size >= 1, f"--batch-size: expected a positive integer, got {batch_size}")
    sources = [Path(p) for p in inputs]
    expect(sources, "no input files given")
    for src in sources:
        _check_input(src, dataset, hdu)
    targets = output_paths(sources, out)
    for dst in targets:
        expect(overwrite or not dst.exists(), f"{dst}: exists (use --overwrite to replace it)")
    model = Upscaler(model_dir, backend, device)
    return [upscale_file(model, src, dst, batch_size=batch_size, progress=progress, dataset=dataset, hdu=hdu)
            for src, dst in zip(sources, targets)]
