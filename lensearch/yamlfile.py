"""Reading the user's YAML files (run configurations, search spaces) with one-line errors naming the file."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, TypeVar

import yaml

from lensearch.errors import UserError

T = TypeVar("T")


def read_yaml(path: str | Path, kind: str, parse: Callable[[Any], T]) -> T:
    """Load ``path`` and hand the document to ``parse``; every error is prefixed with the file (and line)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such {kind} file")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise UserError(f"{path}{where}: not valid YAML ({getattr(err, 'problem', None) or err})") from None
    try:
        return parse(raw)
    except UserError as err:
        raise UserError(f"{path}: {err}") from None
