"""The ``lensearch`` command line.

Each sub-command lives in its own module of this package and exposes ``register(subparsers)``, which adds
its parser and sets ``func`` to a handler taking the parsed arguments. Handlers import the heavy modules
(torch, ray, mlflow) lazily so ``lensearch --help`` stays fast.

User mistakes raise :class:`lensearch.errors.UserError`; they are printed as a single line and the process
exits with status 2, as is an ``OSError`` on a path the user gave (missing folder, permissions, full disk). Ctrl-C exits with 130 after whatever was already written has been kept.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from lensearch import __version__
from lensearch.errors import UserError

# Order in `lensearch --help`; modules not listed here come after, alphabetically.
_ORDER = ["simulate", "data", "baseline", "models", "space", "train", "tune", "ui", "export", "upscale",
          "report", "downstream"]


def _command_modules() -> list[str]:
    found = [m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")]
    return sorted(found, key=lambda n: (_ORDER.index(n) if n in _ORDER else len(_ORDER), n))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lensearch",
        description="Hyperparameter and architecture search for super-resolution of strong-lensing images.",
    )
    parser.add_argument("--version", action="version", version=f"lensearch {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in _command_modules():
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as err:
        print(f"lensearch {args.command}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a path the user gave that cannot be read or written (missing, permissions, disk)
        print(f"lensearch {args.command}: error: {err.strerror or err}"
              + (f": {err.filename}" if err.filename else ""), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"lensearch {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
