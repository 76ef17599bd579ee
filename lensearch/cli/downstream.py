"""``lensearch downstream DATA.h5 --sr EXPORT_DIR ... --out DIR``: does SR help lens science?"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "downstream", help="score SR exports by what they do for lens classification, finding and regression",
        description="Train small CNNs (FeatureNet) on the HR training images of DATA.h5 - a substructure "
                    "classifier, a lens finder (when the file has non_lens images) and a regressor of theta_E "
                    "(plus e1, e2, gamma1, gamma2 when stored) - and score each on the test split in four "
                    "versions: HR (upper bound), LR upsampled bicubically, LR super-resolved by each --sr "
                    "export, and LR scored by the same architecture trained on bicubically upsampled LR "
                    "images (the honest alternative to SR). Writes downstream.json, downstream.md (tables "
                    "with 95% bootstrap intervals), ROC / confusion / predicted-vs-true PNGs and "
                    "feature_net.pt (the HR substructure classifier, usable as loss.content_weights for the "
                    "GAN content loss) into --out, and logs them to MLflow (experiment 'downstream').")
    p.add_argument("data", type=Path, metavar="DATA.h5", help="a lensearch HDF5 data file (train and test splits)")
    p.add_argument("--sr", nargs="*", type=Path, default=[], metavar="EXPORT_DIR",
                   help="export folders (lensearch export) to score; none = only HR, bicubic and LR-trained")
    p.add_argument("--task", default="all", choices=["classify", "find", "regress", "all"],
                   help="which task (default all: every task the file supports)")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder")
    p.add_argument("--epochs", type=int, default=30, help="training epochs per network (30)")
    p.add_argument("--seed", type=int, default=0, help="seed of training and of the bootstrap draws (0)")
    p.add_argument("--bootstrap", type=int, default=1000, metavar="B",
                   help="bootstrap resamples of the test images for the 95%% intervals (1000; 0 = none)")
    p.add_argument("--batch-size", type=int, default=16, help="training batch size (16)")
    p.add_argument("--store", default="mlruns", type=Path, help="the MLflow store folder (default: ./mlruns)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: the sqlite database under --store)")
    p.add_argument("--no-track", action="store_true", help="log nothing to MLflow")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from lensearch.downstream import DownstreamOptions, run_downstream

    results = run_downstream(DownstreamOptions(
        data=args.data, sr=list(args.sr), out=args.out, task=args.task, epochs=args.epochs, seed=args.seed,
        bootstrap=args.bootstrap, batch_size=args.batch_size, tracking_uri=args.tracking_uri, store=args.store,
        track=not args.no_track))
    print((args.out / "downstream.md").read_text())
    print(f"wrote {args.out.resolve()} (downstream.json, downstream.md, figures"
          + (", feature_net.pt" if "feature_net" in results else "") + ")")
    return 0
