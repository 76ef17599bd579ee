"""Export the best trial of a search as a self-contained, verified model folder, registered in MLflow.

:func:`export_search` (``lensearch export SEARCH --out DIR``) picks a trial, retrains nothing and writes::

    model.ts             TorchScript (traced): raw LR (N,1,h,w) float32 -> SR (N,1,s*h,s*w) in the input's units
    model.onnx           the same graph in ONNX (opset ONNX_OPSET, dynamic N/H/W; input "lr", output "sr")
    state_dict.pt        weights of the bare network: registry.build(name, scale=, in_channels=, **params)
    config.yaml          the trial's resolved run configuration
    normalization.json   the normalization with its fitted statistics (already inside both graphs)
    MODEL_CARD.md        the model card (lensearch.export.card)
    export.json          the manifest: model, files with SHA-256, verification, metrics, cost, provenance

Both graphs are :class:`~lensearch.models.raw.RawImageSR`: the network wrapped in its normalization (applied
to the raw LR input, inverted on the output), so ``lensearch upscale`` needs nothing but the folder. Models
whose registry spec has ``export_notes`` get no ONNX file; the reason is printed and written in the card and
the manifest.

One module per job, in the order of an export:

* :mod:`~lensearch.export.locate`: the search on disk (directory, name or MLflow parent run id);
* :mod:`~lensearch.export.select`: the trial (ranking, Pareto front, ``--trial``);
* :mod:`~lensearch.export.graphs`: TorchScript and ONNX, each checked against PyTorch (parity tolerance);
* :mod:`~lensearch.export.score`: val/test metrics next to bicubic's, and the cost;
* :mod:`~lensearch.export.folder`: the folder and its manifest (:func:`export_search`, the whole job);
* :mod:`~lensearch.export.card`: the model card; :mod:`~lensearch.export.register`: the MLflow registration;
* :mod:`~lensearch.export.layout` (file names, format version) and :mod:`~lensearch.export.read`
  (:func:`read_export`): the folder's contract, shared with ``lensearch upscale``.

This package re-exports the names used elsewhere, so ``from lensearch.export import X`` keeps working.
"""

from __future__ import annotations

from lensearch.device import parse_device
from lensearch.export.folder import export_search
from lensearch.export.graphs import MIN_SIDE, ONNX_OPSET, PARITY_RTOL, ExportError, verify_parity
from lensearch.export.layout import EXPORT_FORMAT, FILES, MANIFEST
from lensearch.export.locate import SearchRef, find_search
from lensearch.export.read import read_export
from lensearch.export.register import register_export
from lensearch.export.score import score_split
from lensearch.export.select import SelectedTrial, choose_trial
from lensearch.models.raw import RawImageSR, load_network

__all__ = ["EXPORT_FORMAT", "FILES", "MANIFEST", "MIN_SIDE", "ONNX_OPSET", "PARITY_RTOL", "ExportError",
           "RawImageSR", "SearchRef", "SelectedTrial", "choose_trial", "export_search", "find_search", "load_network",
           "parse_device", "read_export", "register_export", "score_split", "verify_parity"]
