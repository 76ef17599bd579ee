"""The export folder's contract: its file names, the manifest's name and format version, file digests."""

from __future__ import annotations

import hashlib
from pathlib import Path

__all__ = ["EXPORT_FORMAT", "FILES", "MANIFEST", "sha256"]

EXPORT_FORMAT = 1
MANIFEST = "export.json"
FILES = {"torchscript": "model.ts", "onnx": "model.onnx", "state_dict": "state_dict.pt",
         "config": "config.yaml", "normalization": "normalization.json", "card": "MODEL_CARD.md"}


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
