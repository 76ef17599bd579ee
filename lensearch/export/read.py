"""Reading an export folder back: its manifest, checked, and the files a caller needs, verified by SHA-256."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from lensearch.errors import UserError, expect
from lensearch.export.layout import EXPORT_FORMAT, MANIFEST, sha256

__all__ = ["read_export"]


def read_export(model_dir: str | os.PathLike, need: tuple[str, ...] = ()) -> dict[str, Any]:
    """The manifest of an export folder, checked: format, and presence and SHA-256 of the files in
    ``need`` (keys of :data:`~lensearch.export.layout.FILES`); one-line :class:`UserError` for anything
    missing or garbled."""
    root = Path(model_dir)
    expect(root.is_dir(), f"{root}: no such export folder")
    try:
        manifest = json.loads((root / MANIFEST).read_text())
    except FileNotFoundError:
        raise UserError(f"{root}: not an export folder ({MANIFEST} is missing)") from None
    except (ValueError, UnicodeDecodeError) as err:
        raise UserError(f"{root / MANIFEST}: garbled ({err})") from None
    expect(isinstance(manifest, dict) and manifest.get("format") == "lensearch-export",
           f"{root / MANIFEST}: not a lensearch export manifest")
    expect(manifest.get("format_version") == EXPORT_FORMAT,
           f"{root / MANIFEST}: format_version {manifest.get('format_version')!r}, expected {EXPORT_FORMAT}")
    try:
        for key in need:
            name = manifest["files"].get(key)
            expect(name, f"{root}: this export has no {key} model"
                         + (f" ({manifest['onnx']['skipped']})" if key == "onnx" and manifest["onnx"]["skipped"]
                            else ""))
            expect((root / name).is_file(), f"{root / name}: missing")
            expect(sha256(root / name) == manifest["sha256"][name],
                   f"{root / name}: corrupted (SHA-256 differs from {MANIFEST})")
    except (KeyError, TypeError, AttributeError) as err:
        raise UserError(f"{root / MANIFEST}: garbled (missing {err})") from None
    return manifest
