"""Folders that appear whole or not at all: built in a hidden staging folder beside the target, swapped in last.

Used by ``lensearch export`` (:mod:`lensearch.export.folder`) and ``lensearch report``
(:mod:`lensearch.report.build`). Whether ``out`` may be replaced is the caller's decision, checked before.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["staged_folder", "staging_path"]


def staging_path(out: Path) -> Path:
    """The hidden staging folder of ``out``: ``.<name>.partial`` beside it."""
    return out.with_name(f".{out.name}.partial")


@contextmanager
def staged_folder(out: Path) -> Iterator[Path]:
    """Yield a fresh, empty staging folder for ``out`` (a leftover of an interrupted run is removed first); when
    the block ends without error, ``out`` (if any) is removed and the staging folder renamed to ``out``. On any
    error or interrupt the staging folder is removed and ``out`` is left as it was."""
    tmp = staging_path(out)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
