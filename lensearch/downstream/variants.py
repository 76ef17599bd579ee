"""The versions of the test images every downstream network is scored on.

``HR`` (the truth, the upper bound), ``bicubic`` (LR upsampled bicubically), ``SR:<name>`` (LR through each
export, loaded as ``lensearch upscale`` loads it: the TorchScript graph with the export's normalization
inside, raw LR in, SR out in the same units) and ``LR-trained`` (the same bicubic images, scored by a
network trained on bicubically upsampled LR images instead of HR ones).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lensearch.data.store import H5Info
from lensearch.errors import UserError
from lensearch.models.common import bicubic

__all__ = ["HR", "BICUBIC", "LR_TRAINED", "SRExport", "Variant", "bicubic_images", "load_exports", "sr_images",
           "make_variants"]

HR, BICUBIC, LR_TRAINED = "HR", "bicubic", "LR-trained"


@dataclass
class SRExport:
    """An export folder given with ``--sr``, loaded for inference."""

    name: str
    path: Path
    manifest: dict[str, Any]
    upscaler: Any

    @property
    def run_ids(self) -> dict[str, str]:
        """The MLflow runs the manifest records: the trial's run and the export's own (registry) run."""
        out = {}
        trial = (self.manifest.get("source") or {}).get("run_id")
        export = (self.manifest.get("registered") or {}).get("run_id")
        if trial:
            out["trial_run_id"] = str(trial)
        if export:
            out["export_run_id"] = str(export)
        return out


@dataclass
class Variant:
    """A version of the test images: ``images`` (N,1,H,W) scored by the network trained on ``trained_on``."""

    name: str
    images: np.ndarray
    trained_on: str  # "HR" or "LR"
    export: SRExport | None = field(default=None, repr=False)


def load_exports(paths: list[str | Path], info: H5Info) -> list[SRExport]:
    """Each ``--sr`` folder checked (an export, same scale and channels as the data) and loaded.

    Names are the folders' names (``SR:<name>``), made unique with ``-2``, ``-3``, ... when two coincide.
    """
    from lensearch.upscale import Upscaler  # the one place that knows how to load an export for inference

    out: list[SRExport] = []
    seen: dict[str, int] = {}
    for raw in paths:
        path = Path(raw)
        if not path.is_dir():
            raise UserError(f"--sr {path}: no such export folder")
        upscaler = Upscaler(path, backend="torchscript", device="cpu")
        if upscaler.scale != info.scale:
            raise UserError(f"--sr {path}: the export upscales {upscaler.scale}x, but {info.path} has scale "
                            f"{info.scale}")
        if upscaler.in_channels != 1:
            raise UserError(f"--sr {path}: the export takes {upscaler.in_channels} channels, the data has 1")
        base = path.resolve().name
        seen[base] = seen.get(base, 0) + 1
        name = base if seen[base] == 1 else f"{base}-{seen[base]}"
        out.append(SRExport(name, path.resolve(), upscaler.manifest, upscaler))
    return out


def bicubic_images(lr: np.ndarray, scale: int, batch_size: int = 256) -> np.ndarray:
    """LR images (N,1,h,w) upsampled bicubically (``align_corners=False``, the project's bicubic)."""
    with torch.no_grad():
        return np.concatenate([bicubic(torch.from_numpy(np.ascontiguousarray(lr[a:a + batch_size], np.float32)),
                                       scale).numpy() for a in range(0, len(lr), batch_size)])


def sr_images(export: SRExport, lr: np.ndarray, hr_shape: tuple[int, int], batch_size: int = 64) -> np.ndarray:
    """LR images through the export; its output must have the HR images' size."""
    out = np.concatenate([export.upscaler(lr[a:a + batch_size]) for a in range(0, len(lr), batch_size)])
    if tuple(out.shape[-2:]) != tuple(hr_shape):
        raise UserError(f"--sr {export.path}: produces {tuple(out.shape[-2:])} px images from the LR test images, "
                        f"expected the HR size {tuple(hr_shape)}")
    if not np.isfinite(out).all():
        raise UserError(f"--sr {export.path}: produces NaN/inf pixels on the LR test images")
    return out.astype(np.float32, copy=False)


def make_variants(hr: np.ndarray, lr: np.ndarray, scale: int, exports: list[SRExport]) -> list[Variant]:
    """The four versions of the same test images, in table order (HR, bicubic, SR per export, LR-trained)."""
    bic = bicubic_images(lr, scale)
    rows = [Variant(HR, hr, "HR"), Variant(BICUBIC, bic, "HR")]
    rows += [Variant(f"SR:{e.name}", sr_images(e, lr, hr.shape[-2:]), "HR", e) for e in exports]
    rows.append(Variant(LR_TRAINED, bic, "LR"))
    return rows
