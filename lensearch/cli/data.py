"""``lensearch data``: import external data into the HDF5 store and describe a store file."""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any

from lensearch.cli._args import fraction, non_negative_int
from lensearch.errors import UserError


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("data", help="import LR/HR pairs into HDF5, describe an HDF5 file",
                                   description="Import external LR/HR pairs into the lensearch HDF5 format "
                                               "and describe such files.")
    sub = parser.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)

    def split_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--out", required=True, metavar="FILE.h5", help="the HDF5 file to write")
        p.add_argument("--val-fraction", type=fraction, default=0.1, help="share of rows for validation (0.1)")
        p.add_argument("--test-fraction", type=fraction, default=0.1, help="share of rows for the test split (0.1)")
        p.add_argument("--seed", type=non_negative_int, default=0, help="seed of the split assignment (0)")
        p.add_argument("--overwrite", action="store_true", help="replace FILE.h5 if it exists")

    p = sub.add_parser("import-deeplense", help="import DIR/HR/sample{N}.npy + DIR/LR/sample{N}.npy",
                       description="Import a DeepLense super-resolution folder (HR/ and LR/ of .npy files, "
                                   "paired by sample number).")
    p.add_argument("dir", metavar="DIR")
    split_args(p)
    p.set_defaults(func=_import_deeplense)

    p = sub.add_parser("import-fits", help="import FITS pairs matched by file name",
                       description="Import FITS LR/HR pairs matched by file stem.")
    p.add_argument("--hr", required=True, metavar="DIR|GLOB", help="folder or glob of HR FITS files")
    p.add_argument("--lr", required=True, metavar="DIR|GLOB", help="folder or glob of LR FITS files")
    p.add_argument("--hdu", metavar="N|NAME", help="HDU to read (index, negative from the end, or EXTNAME); "
                                                   "needed for files with several image HDUs")
    split_args(p)
    p.set_defaults(func=_import_fits)

    p = sub.add_parser("info", help="summarise (and optionally fully check) an HDF5 file",
                       description="Summarise a lensearch HDF5 file: sizes, splits, classes, parameter "
                                   "ranges, attributes and pixel value ranges.")
    p.add_argument("file", metavar="FILE.h5")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--check", action="store_true", help="scan every image for NaN/inf (exit 2 if any)")
    p.set_defaults(func=_info)


def _fractions(args: argparse.Namespace) -> tuple[float, float, float]:
    v, t = args.val_fraction, args.test_fraction
    if not (0 <= v < 1 and 0 <= t < 1 and v + t < 1):
        raise UserError(f"--val-fraction/--test-fraction: expected values in [0,1) summing below 1, got {v}, {t}")
    return 1 - v - t, v, t


def _print_import(report: Any) -> int:
    h, w = report.hr_shape
    print(f"wrote {report.path}: {report.n} pairs, HR {h}x{w}, LR {report.lr_shape[0]}x{report.lr_shape[1]}, "
          f"scale {report.scale}")
    return 0


def _import_deeplense(args: argparse.Namespace) -> int:
    from lensearch.data.importers import import_deeplense

    return _print_import(import_deeplense(args.dir, args.out, _fractions(args), args.seed, args.overwrite))


def _import_fits(args: argparse.Namespace) -> int:
    from lensearch.data.fits import parse_hdu
    from lensearch.data.importers import import_fits

    hdu = parse_hdu(args.hdu)
    return _print_import(import_fits(args.hr, args.lr, args.out, hdu=hdu, split_fractions=_fractions(args),
                                     seed=args.seed, overwrite=args.overwrite))


def _jsonable(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x


def describe(path: str, full_scan: bool = False, sample: int = 256) -> dict[str, Any]:
    """Everything ``data info`` prints, as a plain dict."""
    import h5py
    import numpy as np

    from lensearch.data.store import open_h5, scan_values

    info = open_h5(path)
    with h5py.File(info.path, "r", locking=False) as f:
        labels = f["label"][()]
        params = f["params"][()]
    counts = np.bincount(labels, minlength=len(info.class_names)) if labels.size else np.zeros(0, int)
    names = info.class_names + [f"class{i}" for i in range(len(info.class_names), counts.size)]
    ranges = {k: [float(np.nanmin(params[:, j])), float(np.nanmax(params[:, j]))]
              for j, k in enumerate(info.param_names)}
    attrs = {k: v for k, v in info.attrs.items() if k not in ("class_names", "complete", "scale")}
    return {
        "path": str(info.path), "n": info.n, "hr_shape": list(info.hr_shape), "lr_shape": list(info.lr_shape),
        "scale": info.scale, "has_clean": info.has_clean, "splits": info.splits,
        "classes": {name: int(c) for name, c in zip(names, counts)}, "params": ranges, "attrs": attrs,
        "values": scan_values(info.path, None if full_scan else sample), "full_scan": full_scan,
    }


def _info(args: argparse.Namespace) -> int:
    d = describe(args.file, full_scan=args.check)
    if args.json:
        print(json.dumps(_jsonable(d)))
    else:
        _print_info(d)
    bad = {k: v["nonfinite"] for k, v in d["values"].items() if v["nonfinite"]}
    if bad:
        what = ", ".join(f"'{k}': {c} image(s)" for k, c in bad.items())
        raise UserError(f"{args.file}: NaN/inf pixels in dataset {what}")
    return 0


def _print_info(d: dict[str, Any]) -> None:
    (H, W), (h, w) = d["hr_shape"], d["lr_shape"]
    rows = [
        ("images", f"{d['n']}   HR {H}x{W}   LR {h}x{w}   scale {d['scale']}   "
                   f"hr_clean {'yes' if d['has_clean'] else 'no'}"),
        ("splits", "   ".join(f"{k} {v}" for k, v in d["splits"].items())),
        ("classes", ", ".join(f"{k} {v}" for k, v in d["classes"].items()) or "-"),
    ]
    rows += [(f"param {k}", f"[{lo:.4g}, {hi:.4g}]") for k, (lo, hi) in d["params"].items()] or [("params", "-")]
    for name, v in d["values"].items():
        scope = f"all {v['images']} images" if v["images"] == d["n"] else f"{v['images']} images sampled"
        rows.append((f"{name} values", f"min {v['min']:.4g}  max {v['max']:.4g}  mean {v['mean']:.4g}  ({scope})"))
    rows += [(f"attr {k}", str(v)) for k, v in d["attrs"].items()]
    width = max(len(r[0]) for r in rows)
    print(d["path"])
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")
    sys.stdout.flush()
