"""``lensearch space show FILE`` / ``lensearch space sample FILE -n 3`` — inspect a search space without training."""

from __future__ import annotations

import json
from pathlib import Path

from lensearch.cli._args import non_negative_int, positive_int


def register(sub) -> None:
    p = sub.add_parser("space", help="inspect a search-space file (flattened parameters, sampled configurations)")
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    show = verbs.add_parser("show", help="validate the file and print its flattened space")
    show.add_argument("file", type=Path)
    show.add_argument("--json", action="store_true", help="one JSON object")
    show.add_argument("--profile", help="apply this profile of the file (e.g. cpu, gpu) before showing it")
    show.set_defaults(func=run_show)
    sample = verbs.add_parser("sample", help="print configurations sampled from the space (no training)")
    sample.add_argument("file", type=Path)
    sample.add_argument("-n", "--num", type=positive_int, default=3, help="how many (default 3)")
    sample.add_argument("--seed", type=non_negative_int, help="sampler seed (default: searcher.seed)")
    sample.add_argument("--json", action="store_true", help="one JSON object per line")
    sample.add_argument("--profile", help="apply this profile of the file (e.g. cpu, gpu) before sampling")
    sample.set_defaults(func=run_sample)


def run_show(args) -> int:
    from lensearch.search.schema import load_search

    search = load_search(args.file).with_profile(args.profile)
    rows = search.space.describe()
    if args.json:
        print(json.dumps({"name": search.name, "objective": [vars(o) for o in search.objectives],
                          "budget": search.budget, "early_stopping": search.early_stopping, "searcher": search.searcher,
                          "resources": search.resources, "data": search.data,
                          "space": [{"name": n, "values": v, "when": c} for n, v, c in rows]}))
        return 0
    profiles = f"; profiles: {', '.join(search.profiles)}" if search.profiles else ""
    shown = f" with profile '{search.profile}'" if search.profile else ""
    print(f"search '{search.name}' ({args.file}{shown}{profiles})")
    print("objective: " + ", ".join(f"{o.metric} ({o.mode})" for o in search.objectives))
    b = search.budget
    print(f"budget: {b['num_samples']} trials x <= {b['max_epochs']} epochs; early stopping {search.early_stopping['name']}; "
          f"searcher {search.searcher['name']} (seed {search.searcher['seed']})")
    width = max(len(n) for n, _, _ in rows)
    for name, values, cond in rows:
        print(f"  {name:<{width}}  {values}" + (f"   [when {cond}]" if cond else ""))
    return 0


def run_sample(args) -> int:
    import optuna

    from lensearch.search.schema import load_search
    from lensearch.search.samplers import make_sampler

    search = load_search(args.file).with_profile(args.profile)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    searcher = dict(search.searcher, seed=args.seed if args.seed is not None else search.searcher["seed"])
    directions = ["maximize" if o.mode == "max" else "minimize" for o in search.objectives]
    study = optuna.create_study(sampler=make_sampler(searcher, search.multi_objective), directions=directions)
    for i in range(args.num):
        trial = study.ask()
        search.space.suggest(trial)
        config = search.space.materialize(trial.params)
        if args.json:
            print(json.dumps({"params": trial.params, "config": config}))
        else:
            print(f"# sample {i + 1}")
            for key, value in sorted(trial.params.items()):
                print(f"  {key} = {value}")
        study.tell(trial, state=optuna.trial.TrialState.FAIL)  # nothing trained: do not inform the sampler
    return 0
