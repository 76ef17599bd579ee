"""Import external LR/HR pairs into the store format.

* :func:`import_deeplense`: ``DIR/HR/sample{N}.npy`` + ``DIR/LR/sample{N}.npy``, paired by the number N.
* :func:`import_fits`: two folders (or globs) of FITS files, paired by file stem (names, HDU choice and
  pixel scales follow :mod:`lensearch.data.fits`, as ``lensearch upscale`` does).

Unpaired, unreadable and mis-shaped files (a shape other than the most common HR/LR pair) are skipped with
one warning line per kind on stderr, naming the source and each file with its folder (``HR/sample4.npy``,
since HR and LR files share names); NaN/inf pixels, a non-integer scale or nothing left to import are
:class:`~lensearch.errors.UserError`. Images are stored as float32 with ``lr_mode="external"``.
"""

from __future__ import annotations

import glob
import math
import re
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lensearch.data.fits import fits_suffix, pixel_scale, read_image
from lensearch.data.writer import H5Writer
from lensearch.errors import UserError

__all__ = ["ImportReport", "import_deeplense", "import_fits"]


@dataclass
class ImportReport:
    path: Path
    n: int
    hr_shape: tuple[int, int]
    lr_shape: tuple[int, int]
    scale: int
    skipped: dict[str, list[str]] = field(default_factory=dict)  # kind -> file names


def _image2d(shape: Sequence[int]) -> tuple[int, int] | None:
    """(H, W) for shapes (H,W), (1,H,W), (1,1,H,W); None otherwise."""
    shape = tuple(int(s) for s in shape)
    while len(shape) > 2 and shape[0] == 1:
        shape = shape[1:]
    return shape if len(shape) == 2 and min(shape) > 0 else None  # type: ignore[return-value]


def _rel(path: Path) -> str:
    """``HR/sample4.npy``: the file with its folder (HR and LR files often share their names)."""
    return f"{path.parent.name}/{path.name}"


def _warn(skipped: dict[str, list[str]], what: str, kept: str = "", show: int = 3) -> None:
    """One line per kind of skipped file, naming the source ``what`` and the first ``show`` files."""
    for kind, names in skipped.items():
        if names:
            more = ", ..." if len(names) > show else ""
            note = f" (the import keeps {kept})" if kind == "mis-shaped" and kept else ""
            print(f"lensearch: warning: {what}: skipped {len(names)} {kind} file(s): "
                  f"{', '.join(names[:show])}{more}{note}", file=sys.stderr)


def _check_out(out: str | Path, overwrite: bool) -> Path:
    out = Path(out)
    if out.is_dir():
        raise UserError(f"{out}: is a directory; --out takes an .h5 file path")
    if out.exists() and not overwrite:
        raise UserError(f"{out}: already exists (pass --overwrite to replace it)")
    return out


def _write_pairs(pairs: list[tuple[str, Path, Path]], out: Path, *, shape: Callable[[Path], Sequence[int]],
                 load: Callable[[Path], np.ndarray], skipped: dict[str, list[str]], attrs: dict[str, Any],
                 split_fractions: Sequence[float], seed: int, what: str, block: int = 256) -> ImportReport:
    """Shape-check all pairs cheaply, keep the most common (HR, LR) shapes, stream the rest to ``out``."""
    shaped = []
    for key, hr, lr in pairs:
        try:
            raw = tuple(shape(hr)), tuple(shape(lr))
        except UserError:
            raise
        except Exception:  # noqa: BLE001 - any unreadable file is skipped and reported
            skipped["unreadable"].append(f"{_rel(hr)} / {_rel(lr)}")
            continue
        hs, ls = _image2d(raw[0]), _image2d(raw[1])
        if hs is None or ls is None:
            skipped["mis-shaped"].append(f"{_rel(hr)} {raw[0]}" if hs is None else f"{_rel(lr)} {raw[1]}")
            continue
        shaped.append((key, hr, lr, hs, ls))
    kept = ""
    if shaped:
        (hr_shape, lr_shape), _ = Counter((s[3], s[4]) for s in shaped).most_common(1)[0]
        skipped["mis-shaped"] += [f"{_rel(h)} {hs} / {_rel(l)} {ls}" for _, h, l, hs, ls in shaped
                                  if (hs, ls) != (hr_shape, lr_shape)]
        shaped = [s for s in shaped if (s[3], s[4]) == (hr_shape, lr_shape)]
        kept = f"the most common pair: HR {hr_shape} / LR {lr_shape}"
    _warn(skipped, what, kept)
    if not shaped:
        raise UserError(f"{what}: no usable HR/LR pairs found")
    scale = hr_shape[0] // lr_shape[0]
    if scale < 1 or hr_shape != (scale * lr_shape[0], scale * lr_shape[1]):
        raise UserError(f"{what}: HR size {hr_shape} is not an integer multiple (same in both axes) of "
                        f"LR size {lr_shape}")
    n = len(shaped)
    lo, hi = math.inf, -math.inf
    with H5Writer(out, n=n, hr_size=hr_shape, lr_size=lr_shape, scale=scale, param_names=[],
                  class_names=["all"], with_clean=False, attrs={"lr_mode": "external", **attrs},
                  split_fractions=split_fractions, split_seed=seed) as writer:
        for a in range(0, n, block):
            imgs = {"hr": [], "lr": []}
            for _, hr_path, lr_path, _, _ in shaped[a:a + block]:
                for name, path, size in (("hr", hr_path, hr_shape), ("lr", lr_path, lr_shape)):
                    x = np.asarray(load(path), dtype=np.float32).reshape(size)
                    bad = int((~np.isfinite(x)).sum())
                    if bad:
                        raise UserError(f"{path}: contains {bad} NaN/inf pixel(s)")
                    lo, hi = min(lo, float(x.min())), max(hi, float(x.max()))
                    imgs[name].append(x)
            b = len(imgs["hr"])
            writer.write(a, hr=np.stack(imgs["hr"]), lr=np.stack(imgs["lr"]), label=np.zeros(b, dtype=np.int64),
                         params=np.zeros((b, 0), dtype=np.float32))
        writer.attrs["units"] = "normalised [0,1]" if lo >= 0 and hi <= 1 else attrs.get("units", "unknown")
    return ImportReport(path=out, n=n, hr_shape=hr_shape, lr_shape=lr_shape, scale=scale,
                        skipped={k: v for k, v in skipped.items() if v})


def _pair(hr_files: dict[str, Path], lr_files: dict[str, Path], skipped: dict[str, list[str]],
          sort_key: Callable[[str], Any] = str) -> list[tuple[str, Path, Path]]:
    common = sorted(set(hr_files) & set(lr_files), key=sort_key)
    skipped["unpaired"] += sorted(f"{p.parent.name}/{p.name}" for k, p in [*hr_files.items(), *lr_files.items()]
                                  if k not in hr_files or k not in lr_files)
    return [(k, hr_files[k], lr_files[k]) for k in common]


def _new_skipped() -> dict[str, list[str]]:
    return {"unpaired": [], "unreadable": [], "mis-shaped": []}


# --------------------------------------------------------------------------------------------- DeepLense
def import_deeplense(directory: str | Path, out: str | Path, split_fractions: Sequence[float] = (0.8, 0.1, 0.1),
                     seed: int = 0, overwrite: bool = False) -> ImportReport:
    """Import ``DIR/HR/*.npy`` and ``DIR/LR/*.npy`` (arrays (1,H,W) or (H,W)), paired by the number in
    the file name (``sample12.npy`` <-> ``sample12.npy``)."""
    d = Path(directory)
    out = _check_out(out, overwrite)
    for sub in ("HR", "LR"):
        if not (d / sub).is_dir():
            raise UserError(f"{d}: expected sub-folders HR/ and LR/ with .npy files, {sub}/ is missing")
    skipped = _new_skipped()

    def by_id(folder: Path) -> dict[str, Path]:
        found = {}
        for p in sorted(folder.glob("*.npy")):
            m = re.findall(r"\d+", p.stem)
            if m:
                found[str(int(m[-1]))] = p
            else:
                skipped["unpaired"].append(f"{folder.name}/{p.name}")
        return found

    pairs = _pair(by_id(d / "HR"), by_id(d / "LR"), skipped, sort_key=int)
    return _write_pairs(pairs, out, shape=lambda p: np.load(p, mmap_mode="r").shape,
                        load=lambda p: np.load(p), skipped=skipped, attrs={"source": "deeplense"},
                        split_fractions=split_fractions, seed=seed, what=str(d))


# --------------------------------------------------------------------------------------------- FITS
def _fits_files(spec: str | Path) -> dict[str, Path]:
    spec = str(spec)
    if Path(spec).is_dir():
        files = [p for p in sorted(Path(spec).iterdir()) if fits_suffix(p)]
    else:
        files = [Path(p) for p in sorted(glob.glob(spec))]
    if not files:
        raise UserError(f"{spec}: no FITS files found (a folder or a glob such as 'dir/*.fits')")
    return {p.name[: len(p.name) - len(fits_suffix(p))]: p for p in files}


def import_fits(hr: str | Path, lr: str | Path, out: str | Path, hdu: int | str | None = None,
                split_fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0,
                overwrite: bool = False) -> ImportReport:
    """Import FITS pairs matched by file stem from ``hr`` and ``lr`` (folders or globs).

    ``hdu`` picks the extension by index (negative from the end) or name; without it each file must hold
    exactly one image HDU. The pixel scales of the first pair (from their WCS, see
    :func:`lensearch.data.fits.pixel_scale`) become ``pixel_scale_hr``/``pixel_scale_lr``.
    """
    out = _check_out(out, overwrite)
    skipped = _new_skipped()
    pairs = _pair(_fits_files(hr), _fits_files(lr), skipped)

    def read(path: Path) -> tuple[np.ndarray, float]:
        data, header = read_image(path, hdu)
        return data, pixel_scale(header)

    attrs: dict[str, Any] = {"source": "fits", "units": "unknown"}
    if pairs:  # pixel scales of the first pair (its HDU problems surface here, naming the file)
        attrs["pixel_scale_hr"], attrs["pixel_scale_lr"] = read(pairs[0][1])[1], read(pairs[0][2])[1]
    return _write_pairs(pairs, out, shape=lambda p: read(p)[0].shape, load=lambda p: read(p)[0],
                        skipped=skipped, attrs=attrs, split_fractions=split_fractions, seed=seed,
                        what=f"{hr} + {lr}")
