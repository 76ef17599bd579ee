"""``lensearch report SEARCH... --out DIR``: a self-contained HTML + Markdown report of one or more searches."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from lensearch.cli._args import location


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "report", help="write an HTML + Markdown report of searches: leaderboard, curves, importance, physics",
        description="Read one or more searches from MLflow (and their search directories) and write DIR/report.html "
                    "with PNG figures beside it and the same content as DIR/report.md (plus report.json): the "
                    "leaderboard per architecture with the bicubic and noise-ceiling rows, learning curves, where "
                    "early stopping cut trials, best value against compute spent, parameter importance (Optuna "
                    "fANOVA and PED-ANOVA) and per-parameter effects with bootstrap CIs, the Pareto front of "
                    "multi-objective searches, and, with the data file at hand, image panels with residuals, "
                    "azimuthal profiles, residual power spectra and physics measures (flux error, Einstein-ring "
                    "radius/centre error, ring residual) of each architecture's best checkpoint, with SSIM in the "
                    "project's (Gaussian 11/1.5) and scikit-image's (uniform 7x7) conventions; then the results of "
                    "the lensearch downstream runs that scored exports of the searches' trials (science tasks on "
                    "LR-trained, bicubic, SR and HR images, with bootstrap intervals). Definitions: "
                    "docs/report.md.")
    p.add_argument("searches", nargs="+", metavar="SEARCH",
                   help="a search directory, a search name (its latest run under STORE/searches), a search "
                        "stored in object storage (s3://BUCKET/PREFIX/searches/NAME-STAMP) or an MLflow parent "
                        "run id; several make one report")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="the report folder to write")
    p.add_argument("--store", default="mlruns", type=location,
                   help="where searches live (default: ./mlruns): a path or s3://BUCKET/PREFIX")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: the sqlite database of the search's store)")
    p.add_argument("--data", type=location, metavar="FILE.h5",
                   help="score the best checkpoints on this file's test split (and draw panels and physics from it); "
                        "default: no test scores, panels and physics from the val split of the search's data file "
                        "when it still exists")
    p.add_argument("--overwrite", action="store_true", help="replace DIR if it holds an earlier report")
    p.add_argument("--json", action="store_true", help="print the report's summary as one JSON object")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from lensearch.report.build import build_report

    summary = build_report(args.searches, args.out, store=args.store, tracking_uri=args.tracking_uri,
                           data=args.data, overwrite=args.overwrite)
    if args.json:
        from lensearch.report.build import _jsonable

        print(json.dumps(summary, default=_jsonable))
        return 0
    out = Path(summary["out"])
    print(f"wrote {out / 'report.html'} and {out / 'report.md'} ({len(summary['figures'])} figures)")
    for s in summary["searches"]:
        for line in s.get("findings", [])[:5]:
            print(f"  {s['name']}: {line}")
    for run in summary["downstream"]["runs"]:
        for task in run["tasks"].values():
            for line in task["findings"][:3]:
                print(f"  downstream {run['run_id'][:8]}: {line}")
    if not summary["downstream"]["runs"]:
        print(f"  no downstream run yet; make one with: {summary['downstream']['how_to']}")
    return 0
