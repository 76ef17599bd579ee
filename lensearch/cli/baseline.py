"""``lensearch baseline``: PSNR/SSIM/MSE of interpolation upsampling (the floor every model must beat)."""

from __future__ import annotations

import argparse
import json
import math
from typing import Any

from lensearch.cli._args import positive_int


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("baseline", help="score bicubic/bilinear/nearest upsampling on an HDF5 file",
                              description="Upsample LR by interpolation and score it against HR (and against "
                                          "hr_clean, with the noise ceiling, where the file has it).")
    p.add_argument("file", metavar="FILE.h5")
    p.add_argument("--split", default="test", choices=["test", "val", "train", "all"], help="(test)")
    p.add_argument("--methods", default="bicubic,bilinear,nearest",
                   help="comma-separated from bicubic, bicubic-pil, bilinear, nearest (bicubic,bilinear,nearest)")
    p.add_argument("--batch-size", type=positive_int, default=64, help="images per batch (64)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from lensearch.evaluation import baseline_metrics
    from lensearch.errors import UserError

    if args.batch_size < 1:
        raise UserError(f"--batch-size: expected a positive integer, got {args.batch_size}")
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    result = baseline_metrics(args.file, split=args.split, methods=methods, batch_size=args.batch_size)
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{result['file']}: split {result['split']}, {result['n']} images, scale {result['scale']}x "
          f"(metrics on images unit-scaled by the reference)")
    rows = dict(result["methods"])
    if result["noise_ceiling"]:
        rows["noise ceiling (hr_clean vs hr)"] = result["noise_ceiling"]
    cols = [c for c in ("psnr", "ssim", "mse", "psnr_clean", "ssim_clean", "mse_clean")
            if any(c in r for r in rows.values())]
    fmt = {"psnr": "{:.3f}", "ssim": "{:.4f}", "mse": "{:.3e}"}
    width = max(len(k) for k in rows)
    print(f"{'method':<{width}}" + "".join(f"{c:>12}" for c in cols))
    for name, r in rows.items():
        cells = [fmt[c.split('_')[0]].format(r[c]) if c in r and not math.isnan(r[c]) else "-" for c in cols]
        print(f"{name:<{width}}" + "".join(f"{v:>12}" for v in cells))
    return 0
