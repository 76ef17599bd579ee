"""``lensearch upscale MODEL_DIR INPUT... -o OUT``: apply an exported model to .npy, HDF5 and FITS files."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from lensearch.cli._args import positive_int


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "upscale", help="super-resolve .npy, HDF5 or FITS images with an exported model",
        description="Apply a model folder written by `lensearch export` to image files. .npy: (h,w), (K,h,w) or "
                    "(N,1,h,w). HDF5: a lensearch data file gets a copy with dataset 'sr' upscaled from 'lr'; "
                    "--dataset NAME upscales any dataset into a new file. FITS: the image HDU is replaced by its "
                    "SR image, the header kept with the WCS rescaled and a HISTORY card. Outputs are float32 in "
                    "the input's units.")
    p.add_argument("model_dir", type=Path, metavar="MODEL_DIR", help="a folder written by `lensearch export`")
    p.add_argument("inputs", nargs="+", type=Path, metavar="INPUT", help=".npy, .h5/.hdf5 or .fits files")
    p.add_argument("-o", "--out", metavar="OUT",
                   help="output file (one input) or directory (several inputs; same file names); default: "
                        "<stem>_sr<suffix> next to each input")
    p.add_argument("--backend", choices=["torchscript", "onnx"], default="torchscript",
                   help="the exported graph to run (default: torchscript)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    p.add_argument("--batch-size", type=positive_int, default=16, help="images per forward pass (16)")
    p.add_argument("--dataset", metavar="NAME", help="HDF5: the dataset to upscale (any file layout)")
    p.add_argument("--hdu", metavar="N|NAME", help="FITS: the image HDU (index, negative from the end, or "
                                                   "EXTNAME); needed when a file has several")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from lensearch.data.fits import parse_hdu
    from lensearch.upscale import upscale_files

    hdu = parse_hdu(args.hdu)
    written = upscale_files(args.model_dir, args.inputs, args.out, backend=args.backend, device=args.device,
                            batch_size=args.batch_size, dataset=args.dataset, hdu=hdu, overwrite=args.overwrite,
                            progress=not args.quiet)
    for path in written:
        print(path)
    return 0
