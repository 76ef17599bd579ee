"""The ``lensearch`` command line.

Each sub-command lives in its own module of this package and exposes ``register(subparsers)``, which adds
its parser and sets ``func`` to a handler taking the parsed arguments. Handlers import the heavy modules
(torch, ray, mlflow) lazily so ``lensearch --help`` stays fast.

User mistakes raise :class:`lensearch.errors.UserError`; they are printed as a single line and the process
exits with status 2, as is an ``OSError`` on a path the user gave (missing folder, permissions, full disk), and
a flag value argparse refuses (numbers are range-checked by the types in ``_args.py``). ``--debug`` (before or
after the command) prints the traceback as well. Ctrl-C exits with 130 after whatever was already written has
been kept.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
import traceback

from lensearch import __version__
from lensearch.cli._args import Parser
from lensearch.errors import UserError

# Order in `lensearch --help`; modules not listed here come after, alphabetically.
_ORDER = ["simulate", "data", "baseline", "models", "space", "train", "tune", "ui", "export", "upscale",
          "report", "downstream"]


def _command_modules() -> list[str]:
    found = [m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")]
    return sorted(found, key=lambda n: (_ORDER.index(n) if n in _ORDER else len(_ORDER), n))


DEBUG_HELP = "on an error, print the full traceback too (a user error is otherwise one line)"


def _add_debug(parser: argparse.ArgumentParser) -> None:
    """``--debug`` after the command (and its sub-verbs) too; SUPPRESS keeps a value given before it."""
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in set(action.choices.values()):
                _add_debug(sub)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="lensearch",
        description="Hyperparameter and architecture search for super-resolution of strong-lensing images.",
    )
    parser.add_argument("--version", action="version", version=f"lensearch {__version__}")
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in _command_modules():
        importlib.import_module(f"{__name__}.{name}").register(sub)
    for command in set(sub.choices.values()):
        _add_debug(command)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as err:
        if args.debug:
            traceback.print_exc()
        print(f"lensearch {args.command}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a path the user gave that cannot be read or written (missing, permissions, disk)
        if args.debug:
            traceback.print_exc()
        print(f"lensearch {args.command}: error: {err.strerror or err}"
              + (f": {err.filename}" if err.filename else ""), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"lensearch {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
