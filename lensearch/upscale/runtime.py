"""An export folder loaded for inference with the TorchScript or ONNX backend, on CPU or CUDA."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lensearch.device import parse_device
from lensearch.errors import UserError, expect
from lensearch.export.layout import FILES
from lensearch.export.read import read_export

__all__ = ["BACKENDS", "Upscaler", "as_float"]

BACKENDS = ("torchscript", "onnx")


class Upscaler:
    """An export folder loaded for inference: ``upscaler(x)`` maps float32 ``(N,C,h,w)`` to ``(N,C,s*h,s*w)``.

    The graphs take raw images and return SR images in the same units (normalization applied and inverted
    inside). ``training_pixel_scale`` is the LR pixel scale (arcsec/px) of the data the model was trained
    on, as the export manifest records it (``data.attrs.pixel_scale_lr``); NaN when unknown.
    """

    def __init__(self, model_dir: str | os.PathLike, backend: str = "torchscript", device: str = "cpu"):
        expect(backend in BACKENDS, f"--backend {backend}: expected one of {', '.join(BACKENDS)}")
        self.dir, self.backend, self.device = Path(model_dir), backend, parse_device(device)
        self.manifest = read_export(self.dir, need=(backend,))
        model = self.manifest["model"]
        self.name, self.scale = model["name"], int(model["scale"])
        self.in_channels, self.min_side = int(model["in_channels"]), int(model["min_side"])
        attrs = (self.manifest.get("data") or {}).get("attrs") or {}
        self.training_pixel_scale = as_float(attrs.get("pixel_scale_lr"))
        path = self.dir / FILES[backend]
        try:
            self._run = self._torchscript(path) if backend == "torchscript" else self._onnx(path)
        except UserError:
            raise
        except Exception as err:
            raise UserError(f"{path}: cannot be loaded ({type(err).__name__}: {err})") from None

    def _torchscript(self, path: Path) -> Callable[[np.ndarray], np.ndarray]:
        module = torch.jit.load(str(path), map_location=self.device).eval()

        def run(x: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return module(torch.from_numpy(x).to(self.device)).float().cpu().numpy()
        return run

    def _onnx(self, path: Path) -> Callable[[np.ndarray], np.ndarray]:
        import onnxruntime as ort

        providers: list[Any] = ["CPUExecutionProvider"]
        if self.device.type == "cuda":
            expect("CUDAExecutionProvider" in ort.get_available_providers(),
                   "--backend onnx --device cuda: this onnxruntime has no CUDA provider (install onnxruntime-gpu, "
                   "or use --backend torchscript)")
            providers = [("CUDAExecutionProvider", {"device_id": self.device.index or 0})]
        session = ort.InferenceSession(str(path), providers=providers)
        return lambda x: session.run(None, {"lr": x})[0]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self._run(np.ascontiguousarray(x, dtype=np.float32))


def as_float(value: Any) -> float:
    """``float(value)``, NaN for anything that is not a number (a missing or empty attribute)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")
