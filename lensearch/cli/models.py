"""``lensearch models``: list the model zoo, or show one model's hyperparameters and cost."""

from __future__ import annotations

import argparse

from lensearch.cli._args import positive_int
from lensearch.errors import UserError


def register(subparsers) -> None:
    parser = subparsers.add_parser("models", help="list the super-resolution models and their hyperparameters",
                                   description=__doc__)
    sub = parser.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    sub.add_parser("list", help="name, kind and summary of every model").set_defaults(func=_list)
    show = sub.add_parser("show", help="one model's hyperparameters and its cost at the default config")
    show.add_argument("name", help="model name (see `lensearch models list`)")
    show.add_argument("--scale", type=positive_int, default=2, help="upscaling factor (default 2)")
    show.add_argument("--lr-size", type=positive_int, default=32, help="LR side in px for the cost numbers (default 32)")
    show.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                      help="override a hyperparameter for the cost numbers (repeatable)")
    show.set_defaults(func=_show)


def _table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1] for r in rows)


def _params_table(params) -> str:
    if not params:
        return "  (no hyperparameters)"
    rows = [("name", "type", "default", "valid", "help")]
    rows += [(p.name, p.type.__name__, repr(p.default), p.describe(), p.help) for p in params]
    return "\n".join("  " + line for line in _table(rows).splitlines())


def _list(args: argparse.Namespace) -> int:
    from lensearch.models import registry

    rows = [("name", "kind", "summary")] + [(n, registry.get(n).kind, registry.get(n).summary)
                                            for n in registry.names()]
    print(_table(rows))
    print("\ndiscriminators (GAN models): " + ", ".join(registry.discriminator_names()))
    return 0


def _parse_sets(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"--set: expected KEY=VALUE, got {item!r}")
        out[key.strip()] = value.strip()
    return out


def _show(args: argparse.Namespace) -> int:
    import torch

    from lensearch.models import cost, registry

    spec = registry.get(args.name)
    hparams = registry.resolve_params(spec.name, _parse_sets(args.set))
    if args.lr_size < 1:
        raise UserError(f"--lr-size: expected a positive integer, got {args.lr_size}")
    print(f"{spec.name} ({spec.kind}): {spec.summary}")
    print("hyperparameters:\n" + _params_table(spec.params))
    if spec.discriminator:
        disc = registry.get_discriminator(spec.discriminator)
        print(f"discriminator {disc.name}: {disc.summary}\n" + _params_table(disc.params))
    if spec.export_notes:
        print(f"export: {spec.export_notes}")
    torch.manual_seed(0)
    model = registry.build(spec.name, scale=args.scale, **hparams)
    c = cost.model_cost(model, (1, 1, args.lr_size, args.lr_size))
    config = "this config" if args.set else "default config"
    print(f"cost ({config}, one {args.lr_size}->{args.lr_size * args.scale} px image): {c['params']:,} parameters, "
          f"{c['flops'] / 1e9:.3f} GFLOPs, {c['latency_ms']:.1f} ms median on CPU ({torch.get_num_threads()} threads)")
    return 0
