"""``lensearch tune FILE.yaml`` — run a search; ``lensearch train RUN.yaml`` — train one configuration.

Both go through the same machinery (Ray Tune driving Ray Train, MLflow logging from the driver), so a
single training run is tracked exactly like a search trial.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lensearch.cli._args import location, non_negative_int, positive_float, positive_int


def add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--address", help="join an existing Ray cluster, e.g. 'auto' for the one running on this "
                                     "machine or HOST:6379 (default: start a local one)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: sqlite database under STORE)")
    p.add_argument("--store", type=location,
                   help="where searches, checkpoints and the default MLflow database live (default: ./mlruns; "
                        "with --resume: the store the search started in): a path (shared by every node on a "
                        "cluster) or object storage, s3://BUCKET/PREFIX (endpoint and credentials from the AWS "
                        "settings, e.g. AWS_ENDPOINT_URL; needs --tracking-uri)")
    p.add_argument("--workers", type=positive_int, help="Ray Train workers per trial (DDP when > 1)")
    gpu = p.add_mutually_exclusive_group()
    gpu.add_argument("--gpu", dest="gpu", action="store_const", const="on", help="train on GPU (NCCL)")
    gpu.add_argument("--cpu", dest="gpu", action="store_const", const="off", help="train on CPU (gloo)")
    p.add_argument("--no-log-checkpoints", action="store_true",
                   help="do not copy best checkpoints into MLflow (their path is still tagged)")
    p.add_argument("--system-metrics", nargs="?", type=float, const=10.0, metavar="SECONDS",
                   help="log CPU/GPU/memory system metrics into each trial's MLflow run, sampled every SECONDS "
                        "(default 10) on the driver's machine")
    p.add_argument("--quiet", action="store_true", help="no live progress lines")
    p.add_argument("--json", action="store_true", help="print the outcome as one JSON object on stdout")


def register(sub) -> None:
    p = sub.add_parser(
        "tune", help="run a hyperparameter/architecture search from a search-space YAML file",
        description="Run a search: the YAML space is compiled into an Optuna define-by-run space, Ray Tune runs "
                    "it with early stopping, each trial is a Ray Train (DDP) run, and MLflow logs every trial "
                    "(one parent run per search, one child run per trial).",
    )
    p.add_argument("file", type=location, help="search-space file, e.g. search_spaces/smoke.yaml (or a URI such as "
                                                "the search.yaml a search in object storage keeps, for --resume)")
    p.add_argument("--num-samples", type=positive_int, help="override budget.num_samples")
    p.add_argument("--max-epochs", type=positive_int, help="override budget.max_epochs")
    p.add_argument("--time-budget", type=positive_float, metavar="SECONDS",
                   help="override budget.time_budget_s: the whole search stops after this many seconds; trials "
                        "still running are cut at their last report and keep their best checkpoint")
    p.add_argument("--max-retries", type=non_negative_int, metavar="N",
                   help="override budget.max_retries (default 1): a trial whose process dies (a killed worker, a "
                        "lost node) is restarted up to N times from its last checkpoint")
    p.add_argument("--profile", help="apply this profile of the file (default: 'gpu' when the Ray cluster has a "
                                     "GPU, else 'cpu', where the file has them)")
    p.add_argument("--data", type=location, metavar="FILE.h5",
                   help="search on this HDF5 file (e.g. from `lensearch data import-deeplense`) instead of the "
                        "file's data section (a path or a URI such as s3://BUCKET/FILE.h5, fetched once per "
                        "node)")
    p.add_argument("--resume", nargs="?", const=True, default=False, metavar="SEARCH_DIR",
                   help="continue an interrupted search (the latest one of this name, or SEARCH_DIR) with the "
                        "search file, budget, data, store and tracking URI it started with: finished trials are "
                        "neither rerun nor logged twice; unfinished ones continue from their last checkpoint. "
                        "Without --resume, a second search of the same name in one store is refused")
    add_run_options(p)
    p.set_defaults(func=run_tune)

    t = sub.add_parser(
        "train", help="train one configuration (the keys of one sampled point of a search space)",
        description="Train one run configuration with Ray Train (DDP when --workers > 1), logged to MLflow like a "
                    "search trial. RUN.yaml has sections data, model, discriminator, normalization, augment, "
                    "optimizer, scheduler, loss, train (see lensearch/training/config.py).",
    )
    t.add_argument("file", type=Path, help="run configuration YAML")
    t.add_argument("--epochs", type=positive_int, help="override train.epochs")
    t.add_argument("--name", help="name of the run (default: the file's stem)")
    add_run_options(t)
    t.set_defaults(func=run_train)


def _options(args, **extra):
    from lensearch.search.tuner import SearchOptions

    return SearchOptions(address=args.address, tracking_uri=args.tracking_uri, store=args.store,
                         workers=args.workers, gpu=args.gpu, log_checkpoints=not args.no_log_checkpoints,
                         quiet=args.quiet, debug=args.debug, system_metrics=args.system_metrics, **extra)


def _finish(outcome, args) -> int:
    from lensearch.search.leaderboard import leaderboard, one_line_summary
    from lensearch.search.results import summary_metrics

    if args.json:
        print(json.dumps({"name": outcome.name, "search_dir": str(outcome.search_dir),
                          "search_uri": outcome.search_uri,
                          "parent_run_id": outcome.parent_run_id, "tracking_uri": outcome.tracking_uri,
                          "summary": summary_metrics(outcome),
                          "trials": [vars(r) for r in outcome.rows]}, default=str))
    else:
        print(leaderboard(outcome))
        print(one_line_summary(outcome))
    if outcome.interrupted:
        return 130
    return 0 if outcome.best() is not None else 1


def run_tune(args) -> int:
    from lensearch.errors import UserError, expect
    from lensearch.search.schema import load_search
    from lensearch.search.tuner import run_search

    # (numbers were range-checked by their argparse types: see lensearch/cli/_args.py)
    from lensearch.storage import is_uri, local_copy

    remote_data = is_uri(args.data)
    expect(args.data is None or remote_data or args.data.is_file(), f"--data {args.data}: no such file")
    if args.data is not None:  # a file that is not a data file is one line now, not after Ray has started
        from lensearch.data.store import open_h5

        try:
            open_h5(local_copy(args.data))
        except UserError as err:
            raise UserError(f"--data {err}") from None
    search = load_search(local_copy(args.file))
    outcome = run_search(search, _options(args, num_samples=args.num_samples, max_epochs=args.max_epochs,
                                          resume=args.resume, time_budget_s=args.time_budget,
                                          max_retries=args.max_retries,
                                          profile=args.profile, data=args.data))
    return _finish(outcome, args)


def run_train(args) -> int:
    from lensearch.errors import UserError
    from lensearch.search.tuner import train_one
    from lensearch.training.config import load_run_config
    from lensearch.training.losses import absolute_loss_paths
    from lensearch.training.validate import check_run_config

    # a relative FeatureNet path is found from here (the driver), not from the trial's own directory
    config = absolute_loss_paths(load_run_config(args.file), Path.cwd())
    try:
        check_run_config(config)
    except UserError as err:
        raise UserError(f"{args.file}: {err}") from None
    if args.epochs is not None:
        config["train"]["epochs"] = args.epochs
    outcome = train_one(config, args.name or args.file.stem, _options(args), source=args.file)
    row = outcome.rows[0] if outcome.rows else None
    code = _finish(outcome, args)
    if row is not None and not args.json:
        print(f"checkpoint: {row.checkpoint or '(none written)'}", file=sys.stderr)
    return code
