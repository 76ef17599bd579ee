"""Writing the export folder and its manifest: :func:`export_search` (``lensearch export SEARCH --out DIR``).

The folder is built in a hidden ``.DIR.partial`` beside ``DIR`` (:func:`lensearch.staging.staged_folder`) and
moved into place only once everything (graphs verified, splits scored, card written, MLflow registration)
succeeded.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml

from lensearch import __version__
from lensearch.device import parse_device
from lensearch.errors import UserError, expect
from lensearch.export import card, graphs
from lensearch.export.layout import EXPORT_FORMAT, FILES, MANIFEST, sha256
from lensearch.export.locate import SearchRef, find_search
from lensearch.export.register import register_export
from lensearch.export.score import measure_cost, score_split
from lensearch.export.select import SelectedTrial, choose_trial, read_checkpoint
from lensearch.models.raw import RawImageSR, load_network
from lensearch.staging import staged_folder

__all__ = ["export_search"]

_CHECKPOINT_KEYS = ("epoch", "eval_model", "model_name", "model_params", "scale", "in_channels", "normalization",
                    "config")


def _data_path(ckpt: dict[str, Any], override: str | os.PathLike | None) -> Path:
    from lensearch.storage import fetch, is_uri

    if override is not None:
        return fetch(override, "data") if is_uri(override) else Path(override).resolve()
    candidates = [ckpt.get("data_path"), (ckpt.get("config") or {}).get("data", {}).get("path")]
    for c in candidates:
        if c and is_uri(c):  # the data in object storage: this machine's cached copy
            return fetch(c, "data")
        if c and Path(c).is_file():
            return Path(c).resolve()
    raise UserError(f"the trial's data file ({next((c for c in candidates if c), 'unknown')}) is missing; "
                    f"pass --data FILE.h5 (the HDF5 file it was trained on)")


def _data_uri(ckpt: dict[str, Any], override: str | os.PathLike | None) -> str | None:
    """The URI the data file was read from, when it is in object storage."""
    from lensearch.storage import is_uri

    for c in (override, ckpt.get("data_path"), (ckpt.get("config") or {}).get("data", {}).get("path")):
        if c and is_uri(str(c)):
            return str(c)
        if c and (override is not None or Path(c).is_file()):
            return None
    return None


def _check_out(out: Path, overwrite: bool) -> None:
    """``out`` may exist only empty, or as an earlier export with ``overwrite`` (never anything else: it is
    replaced at the end)."""
    expect(not out.exists() or out.is_dir(), f"--out {out}: exists and is not a directory")
    if out.exists() and any(out.iterdir()):
        expect(overwrite, f"--out {out}: exists and is not empty (use --overwrite to replace an earlier export)")
        expect((out / MANIFEST).is_file(), f"--out {out}: --overwrite replaces only an earlier export folder "
                                           f"(one with {MANIFEST}); this one has none")


def _write_model_files(tmp: Path, model: RawImageSR, ckpt: dict[str, Any], data: Path,
                       log: Callable[[str], None]) -> tuple[dict[str, Any], torch.nn.Module]:
    """Write the weights, configuration and normalization, then trace, export and verify both graphs into
    ``tmp``; returns the manifest's model-files part and the TorchScript graph."""
    from lensearch.models import registry

    spec = registry.get(ckpt["model_name"])
    inputs = graphs.verification_inputs(data)
    with torch.no_grad():
        want = [model(x).numpy() for x in inputs]
    torch.save(model.net.state_dict(), tmp / FILES["state_dict"])
    (tmp / FILES["config"]).write_text(yaml.safe_dump(ckpt["config"], sort_keys=False))
    (tmp / FILES["normalization"]).write_text(json.dumps(ckpt["normalization"], indent=1))

    log("tracing TorchScript")
    traced = graphs.export_torchscript(model, inputs[0], tmp / FILES["torchscript"])
    with torch.no_grad():
        verification = {"torchscript": graphs.verify_parity("TorchScript", [traced(x).numpy() for x in inputs],
                                                            want)}
    onnx = {"opset": graphs.ONNX_OPSET, "skipped": spec.export_notes or None}
    if spec.export_notes:
        log(f"ONNX skipped for {spec.name}: {spec.export_notes}")
    else:
        log(f"exporting ONNX (opset {graphs.ONNX_OPSET}, dynamic N/H/W)")
        run = graphs.export_onnx(model, inputs[0], tmp / FILES["onnx"])
        verification["onnx"] = graphs.verify_parity("ONNX", [run(x.numpy()) for x in inputs], want)
    files = {k: v for k, v in FILES.items() if (tmp / v).exists() and k != "card"}
    return {"files": files, "sha256": {v: sha256(tmp / v) for v in files.values()}, "onnx": onnx,
            "verification": verification}, traced


def export_search(search: str, out: str | os.PathLike, *, store: str | os.PathLike = "mlruns",
                  tracking_uri: str | None = None, metric: str | None = None, mode: str | None = None,
                  trial: str | None = None, data: str | os.PathLike | None = None, register: bool = True,
                  registered_name: str | None = None, batch_size: int = 32, device: str = "cpu",
                  overwrite: bool = False, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Export a trial of ``search`` (see :func:`~lensearch.export.locate.find_search`,
    :func:`~lensearch.export.select.choose_trial`) into ``out``; returns the manifest (also written as
    ``out/export.json``). The folder appears only once everything succeeded."""
    from lensearch.data.h5format import open_h5
    from lensearch.data.transforms import build_normalization

    log = log or (lambda text: print(f"lensearch export: {text}", file=sys.stderr, flush=True))
    device = parse_device(device)
    ref = find_search(search, store, tracking_uri)
    selected = choose_trial(ref, metric, mode, trial)
    log(f"trial {selected.trial_id}: {selected.reason}")
    ckpt = read_checkpoint(selected.checkpoint)
    missing = [k for k in _CHECKPOINT_KEYS if k not in ckpt]
    expect(not missing, f"{selected.checkpoint}: not a lensearch checkpoint (missing {', '.join(missing)})")
    data_path = _data_path(ckpt, data)
    info = open_h5(data_path)
    expect(info.splits.get("val"), f"{data_path}: the val split is empty; the export is verified on it")
    expect(info.scale == ckpt["scale"], f"{data_path}: scale {info.scale}, but the model upscales "
                                        f"{ckpt['scale']}x")
    model = RawImageSR(load_network(ckpt), build_normalization(ckpt["normalization"])).eval()

    out = Path(out).resolve()
    _check_out(out, overwrite)
    with staged_folder(out) as tmp:
        manifest = _manifest_head(ckpt, ref, selected, info)
        uri = _data_uri(ckpt, data)
        if uri is not None:  # the data in object storage (data.path: this machine's copy)
            manifest["data"]["uri"] = uri
        files, traced = _write_model_files(tmp, model, ckpt, data_path, log)
        manifest.update(files)
        manifest["cost"] = measure_cost(model.net, traced, (1, ckpt["in_channels"], *info.lr_shape))
        splits = [s for s in ("val", "test") if info.splits.get(s)]
        log(f"scoring {' and '.join(splits)} against bicubic on {data_path.name}")
        manifest["metrics"] = {s: score_split(model, data_path, s, batch_size, device) for s in splits}
        (tmp / FILES["card"]).write_text(card.render(manifest, ckpt["config"]))
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))  # the registered copy must be complete
        if register:
            name = registered_name or f"lensearch-{ref.name}"
            manifest["registered"] = register_export(tmp, manifest, ref, name)
            log(f"registered as MLflow model '{name}' version {manifest['registered']['version']}")
            (tmp / FILES["card"]).write_text(card.render(manifest, ckpt["config"]))  # with the version
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return manifest


def _manifest_head(ckpt: dict[str, Any], ref: SearchRef, selected: SelectedTrial, info) -> dict[str, Any]:
    from lensearch.models import registry

    spec = registry.get(ckpt["model_name"])
    return {
        "format": "lensearch-export", "format_version": EXPORT_FORMAT, "lensearch_version": __version__,
        "exported_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "versions": _versions(),
        "model": {"name": spec.name, "kind": spec.kind, "summary": spec.summary, "params": ckpt["model_params"],
                  "scale": ckpt["scale"], "in_channels": ckpt["in_channels"], "min_side": graphs.MIN_SIDE,
                  "normalization": ckpt["normalization"]},
        "source": {"search": ref.name, "search_dir": ref.uri or str(ref.dir), "objectives": ref.objectives,
                   "trial_id": selected.trial_id, "selection": selected.reason,
                   "checkpoint": ref.stored(selected.checkpoint),
                   "epoch": ckpt["epoch"], "trial_metrics": selected.metrics, "tracking_uri": ref.tracking_uri,
                   "parent_run_id": ref.parent_run_id, "run_id": selected.run_id},
        "data": {"path": str(info.path), "n": info.n, "hr_shape": list(info.hr_shape),
                 "lr_shape": list(info.lr_shape), "scale": info.scale, "has_clean": info.has_clean,
                 "splits": info.splits, "class_names": info.class_names,
                 "attrs": {k: v for k, v in info.attrs.items() if k not in ("complete", "class_names")}},
    }


def _versions() -> dict[str, str]:
    import onnx
    import onnxruntime

    return {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}
