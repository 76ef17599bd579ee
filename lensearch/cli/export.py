"""``lensearch export SEARCH --out DIR``: the best trial of a search as a verified, registered model folder."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from lensearch.cli._args import location, positive_int


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "export", help="export the best trial of a search (TorchScript, ONNX, card) and register it in MLflow",
        description="Pick the best trial of a search (or --trial), retrain nothing, and write a self-contained "
                    "model folder: TorchScript and ONNX graphs taking raw LR images (normalization inside), the "
                    "state dict, the run configuration, the normalization, a model card with validation and test "
                    "metrics next to bicubic's, and a manifest. Both graphs are checked against PyTorch on "
                    "validation images; a mismatch fails the export (exit 1). The folder is registered as a new "
                    "version in the MLflow Model Registry.")
    p.add_argument("search", metavar="SEARCH",
                   help="a search directory, a search name (its latest run under STORE/searches), a search "
                        "stored in object storage (s3://BUCKET/PREFIX/searches/NAME-STAMP) or an MLflow parent "
                        "run id")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="the export folder to write")
    p.add_argument("--metric", help="rank trials by this metric (default: the search's first objective)")
    p.add_argument("--mode", choices=["max", "min"], help="direction of --metric (default: known per metric)")
    p.add_argument("--trial", metavar="ID", help="export this trial (e.g. a point of a Pareto front)")
    p.add_argument("--store", default="mlruns", type=location,
                   help="where searches live (default: ./mlruns): a path or s3://BUCKET/PREFIX")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: the sqlite database of the search's store)")
    p.add_argument("--data", type=location, metavar="FILE.h5",
                   help="the HDF5 file the trial was trained on, if it moved (default: the checkpoint's)")
    p.add_argument("--registered-name", help="MLflow registered model name (default: lensearch-<search name>)")
    p.add_argument("--no-register", action="store_true", help="do not log or register anything in MLflow")
    p.add_argument("--device", default="cpu", help="device for scoring val/test (default: cpu)")
    p.add_argument("--batch-size", type=positive_int, default=32, help="images per batch when scoring (32)")
    p.add_argument("--overwrite", action="store_true", help="replace DIR if it exists")
    p.add_argument("--json", action="store_true", help="print the manifest as one JSON object")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from lensearch.export import ExportError, export_search

    try:
        manifest = export_search(
            args.search, args.out, store=args.store, tracking_uri=args.tracking_uri, metric=args.metric,
            mode=args.mode, trial=args.trial, data=args.data, register=not args.no_register,
            registered_name=args.registered_name, batch_size=args.batch_size, device=args.device,
            overwrite=args.overwrite)
    except ExportError as err:
        print(f"lensearch export: failed: {err}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(manifest))
        return 0
    split = "test" if "test" in manifest["metrics"] else "val"
    m, skipped, reg = manifest["metrics"][split], manifest["onnx"]["skipped"], manifest.get("registered")
    print(f"exported trial {manifest['source']['trial_id']} ({manifest['model']['name']}) to {args.out.resolve()}")
    print(f"{split} PSNR {m['model']['psnr']:.3f} dB (bicubic {m['bicubic']['psnr']:.3f}), "
          f"SSIM {m['model']['ssim']:.4f} (bicubic {m['bicubic']['ssim']:.4f}); "
          + (f"ONNX skipped: {skipped}" if skipped else "TorchScript and ONNX verified against PyTorch"))
    if reg:
        print(f"MLflow: registered model '{reg['name']}' version {reg['version']} ({reg['tracking_uri']})")
    return 0
