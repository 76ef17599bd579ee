"""Checkpoint files: written atomically (temp file + rename), so an interruption never leaves a torn file."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch


def save_checkpoint(payload: dict[str, Any], path: Path, best_path: Path | None = None) -> None:
    """Write ``payload`` to ``path``; also copy it to ``best_path`` when given."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    if best_path is not None:
        tmp_best = Path(best_path).with_name(Path(best_path).name + ".tmp")
        shutil.copyfile(path, tmp_best)
        os.replace(tmp_best, best_path)


def load_checkpoint(path: Path, map_location: Any = "cpu") -> dict[str, Any] | None:
    """The checkpoint at ``path``, or ``None`` when there is none yet."""
    path = Path(path)
    if not path.is_file():
        return None
    return torch.load(path, map_location=map_location, weights_only=False)
