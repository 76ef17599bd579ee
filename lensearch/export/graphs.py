"""Building and checking the exported graphs: TorchScript (traced) and ONNX, each verified against PyTorch.

Both graphs are :class:`~lensearch.models.raw.RawImageSR`: the network wrapped in its normalization, so they
take raw LR images ``(N,1,h,w)`` float32 and return SR images in the input's units.

**Verification.** On real validation images (a batch, an odd-sized crop and a crop of the smallest accepted
size), each exported graph must match the PyTorch model: max |graph - PyTorch| <= PARITY_RTOL x (max - min
of the PyTorch output) per input; otherwise :class:`ExportError` with both numbers.

**Smallest input.** Every model pads internally to its own size multiple (SwinIR's window, the UNet's
levels), so the only limit is MIN_SIDE px per side: below that, reflect padding, bicubic and the per-image
normalizations have no neighbourhood to work with.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lensearch.models.raw import RawImageSR

__all__ = ["MIN_SIDE", "ONNX_OPSET", "PARITY_RTOL", "ExportError", "export_onnx", "export_torchscript",
           "verification_inputs", "verify_parity"]

ONNX_OPSET = 18
PARITY_RTOL = 1e-4
MIN_SIDE = 2
VERIFY_IMAGES = 4


class ExportError(RuntimeError):
    """The export could not produce a faithful model (a graph failed to export or to match PyTorch)."""


def _run_exporter(what: str, fn: Callable[[], Any]) -> Any:
    """Run an exporter without its warnings and log lines (internals, not the user's model); a failure
    becomes an :class:`ExportError` naming ``what``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.disable(logging.WARNING)
        try:
            return fn()
        except Exception as err:
            first = (str(err).strip().splitlines() or [""])[0]
            raise ExportError(f"{what} failed: {type(err).__name__}: {first}") from err
        finally:
            logging.disable(logging.NOTSET)


def export_torchscript(model: RawImageSR, example: torch.Tensor, path: Path) -> torch.jit.ScriptModule:
    """Trace ``model`` on ``example``, save it to ``path`` and return the graph loaded back from there."""
    with torch.no_grad():
        traced = _run_exporter("TorchScript trace", lambda: torch.jit.trace(model, example, check_trace=False))
    torch.jit.save(traced, str(path))
    return torch.jit.load(str(path))


def export_onnx(model: RawImageSR, example: torch.Tensor, path: Path) -> Callable[[np.ndarray], np.ndarray]:
    """Export ``model`` to ONNX at ``path`` (dynamic N/H/W) and return a runner of the saved file."""
    import onnxruntime as ort

    dyn = torch.export.Dim.DYNAMIC
    _run_exporter("ONNX export", lambda: torch.onnx.export(
        model, (example,), dynamo=True, opset_version=ONNX_OPSET, input_names=["lr"], output_names=["sr"],
        dynamic_shapes=({0: dyn, 2: dyn, 3: dyn},), verbose=False).save(str(path)))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {"lr": x})[0]


def verify_parity(backend: str, outputs: list[np.ndarray], references: list[np.ndarray],
                  rtol: float = PARITY_RTOL) -> dict[str, Any]:
    """Check each output against the PyTorch reference: max abs error <= ``rtol`` x the reference's range.

    Returns ``{"max_abs_error", "tolerance", "shape"}`` of the worst input (largest error / tolerance) with
    ``inputs`` (how many) and ``rtol``; raises :class:`ExportError` with both numbers when any input fails.
    """
    worst: dict[str, Any] = {}
    for got, want in zip(outputs, references, strict=True):
        span = float(want.max() - want.min()) or float(np.abs(want).max()) or 1.0
        err = float(np.abs(got.astype(np.float64) - want).max()) if got.shape == want.shape else float("inf")
        tol = rtol * span
        if not worst or err / tol > worst["max_abs_error"] / worst["tolerance"]:
            worst = {"max_abs_error": err, "tolerance": tol, "shape": list(want.shape)}
        if not err <= tol:
            raise ExportError(f"{backend} output differs from PyTorch on validation input {tuple(want.shape)}: "
                              f"max abs error {err:.3e} > tolerance {tol:.3e} ({rtol:g} x output range {span:.3e})")
    return {**worst, "inputs": len(references), "rtol": rtol}


def verification_inputs(path: Path) -> list[torch.Tensor]:
    """A validation batch, an odd-sized crop and a MIN_SIDE crop (dynamic shapes, down to the smallest)."""
    from lensearch.data.h5format import iter_batches

    lr = torch.from_numpy(next(iter_batches(path, "val", VERIFY_IMAGES, ("lr",)))["lr"])
    h, w = lr.shape[-2:]
    return [lr, lr[:1, :, : max(h - 1, MIN_SIDE), : max(w - 3, MIN_SIDE)], lr[:1, :, :MIN_SIDE, : MIN_SIDE + 1]]

