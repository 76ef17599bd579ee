"""Reading the user's YAML files (run configurations, search spaces) with one-line errors naming the file.

PyYAML implements YAML 1.1, where a float needs a dot: ``lr: 1e-3`` is read as the *string* ``"1e-3"`` and
would then be refused (or, worse, passed on) wherever a number is expected. :class:`Loader` reads numbers
the YAML 1.2 way (``1e-3``, ``5E+4``, ``1.e-3`` are floats), as every other YAML tool and Python do.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable, TypeVar

import yaml

from lensearch.errors import UserError

T = TypeVar("T")


class Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that also resolves exponent-only floats such as ``1e-3`` (YAML 1.2 core schema)."""


# YAML 1.1's float pattern plus numbers with an exponent and no dot (the YAML 1.2 core schema's float).
_FLOAT = re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                    |[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*
                    |[-+]?\.(?:inf|Inf|INF)
                    |\.(?:nan|NaN|NAN))$""", re.X)
Loader.yaml_implicit_resolvers = {k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:float"]
                                  for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


def load(text: str) -> Any:
    """Parse one YAML document with :class:`Loader`."""
    return yaml.load(text, Loader=Loader)  # noqa: S506 - a SafeLoader subclass


def read_yaml(path: str | Path, kind: str, parse: Callable[[Any], T]) -> T:
    """Load ``path`` and hand the document to ``parse``; every error is prefixed with the file (and line)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such {kind} file")
    try:
        raw = load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise UserError(f"{path}{where}: not valid YAML ({getattr(err, 'problem', None) or err})") from None
    try:
        return parse(raw)
    except UserError as err:
        raise UserError(f"{path}: {err}") from None
