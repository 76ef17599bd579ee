"""Export the best trial of a search as a self-contained, verified model folder, registered in MLflow.

:func:`export_search` (``lensearch export SEARCH --out DIR``) picks a trial, retrains nothing and writes::

    model.ts             TorchScript (traced): raw LR (N,1,h,w) float32 -> SR (N,1,s*h,s*w) in the input's units
    model.onnx           the same graph in ONNX (opset ONNX_OPSET, dynamic N/H/W; input "lr", output "sr")
    state_dict.pt        weights of the bare network: registry.build(name, scale=, in_channels=, **params)
    config.yaml          the trial's resolved run configuration
    normalization.json   the normalization with its fitted statistics (already inside both graphs)
    MODEL_CARD.md        the model card (lensearch.export_card)
    export.json          the manifest: model, files with SHA-256, verification, metrics, cost, provenance

Both graphs are :class:`RawImageSR`: the network wrapped in its normalization (applied to the raw LR input,
inverted on the output), so ``lensearch upscale`` needs nothing but the folder. Models whose registry spec
has ``export_notes`` get no ONNX file; the reason is printed and written in the card and the manifest.

**Selection.** A trial is *finished* when it wrote ``checkpoints/best.pt``; trials are ranked by the
metrics stored in that checkpoint (the epoch whose weights are exported), by default the search's first
objective. Multi-objective searches report their Pareto front; ``--trial`` picks any trial.

**Verification.** On real validation images (a batch, an odd-sized crop and a crop of the smallest
accepted size), each exported graph must match the PyTorch model: max |graph - PyTorch| <= PARITY_RTOL x
(max - min of the PyTorch output) per input; otherwise :class:`ExportError` with both numbers.

**Smallest input.** Every model pads internally to its own size multiple (SwinIR's window, the UNet's
levels), so the only limit is MIN_SIDE px per side: below that, reflect padding, bicubic and the per-image
normalizations have no neighbourhood to work with.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from lensearch import __version__
from lensearch.errors import UserError, expect

__all__ = ["EXPORT_FORMAT", "MANIFEST", "MIN_SIDE", "ONNX_OPSET", "PARITY_RTOL", "Choice", "ExportError",
           "RawImageSR", "SearchRef", "choose_trial", "export_search", "find_search", "parse_device",
           "read_export", "verify_parity"]

EXPORT_FORMAT = 1
MANIFEST = "export.json"
FILES = {"torchscript": "model.ts", "onnx": "model.onnx", "state_dict": "state_dict.pt",
         "config": "config.yaml", "normalization": "normalization.json", "card": "MODEL_CARD.md"}
ONNX_OPSET = 18
PARITY_RTOL = 1e-4
MIN_SIDE = 2
VERIFY_IMAGES = 4
_RUN_ID = re.compile(r"[0-9a-f]{32}")
_STAMP = re.compile(r"-\d{8}-\d{6}(-\d+)?$")  # <name>-<YYYYmmdd-HHMMSS>[-n], as the tuner names search dirs
_CHECKPOINT_KEYS = ("epoch", "eval_model", "model_name", "model_params", "scale", "in_channels", "normalization",
                    "config")
_CARD_LIMIT = 5000  # MLflow keeps at most 5000 characters of a model version's description


class ExportError(RuntimeError):
    """The export could not produce a faithful model (a graph failed to export or to match PyTorch)."""


class RawImageSR(torch.nn.Module):
    """``net`` wrapped in its normalization: raw LR images in, SR images in the same units out."""

    def __init__(self, net: torch.nn.Module, norm):
        super().__init__()
        self.net, self.norm = net, norm

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        return self.norm.invert(self.net(self.norm.apply(lr, lr)), lr)


def parse_device(name: str) -> torch.device:
    """``cpu``, ``cuda`` or ``cuda:N`` as a device; :class:`UserError` for anything else or a missing GPU."""
    try:
        dev = torch.device(name)
    except RuntimeError:
        dev = None
    expect(dev is not None and dev.type in ("cpu", "cuda"), f"--device {name}: expected cpu, cuda or cuda:N")
    expect(dev.type == "cpu" or torch.cuda.is_available(), f"--device {name}: no CUDA device is available")
    return dev


# ------------------------------------------------------------------------------------------- the search
@dataclass
class SearchRef:
    """One search on disk: its directory, objectives and MLflow runs."""

    name: str
    dir: Path
    objectives: list[tuple[str, str]]
    tracking_uri: str
    parent_run_id: str | None = None
    run_ids: dict[str, str] = field(default_factory=dict)
    logged: dict[str, int] = field(default_factory=dict)  # trial -> last epoch it reported
    max_epochs: int | None = None                        # the search's budget (budget.json)


def _search_ref(path: Path, store: Path, tracking_uri: str | None) -> SearchRef:
    from lensearch.search.schema import load_search
    from lensearch.search.tracking import STATE_FILE, default_tracking_uri
    from lensearch.search.tuner import BUDGET

    path = path.resolve()
    expect(any((path / p).exists() for p in ("search.yaml", "trials", STATE_FILE)),
           f"{path}: not a search directory (no search.yaml, trials/ or {STATE_FILE})")
    name, objectives = _STAMP.sub("", path.name), [("val_psnr", "max")]
    if (path / "search.yaml").exists():
        search = load_search(path / "search.yaml")
        name, objectives = search.name, [(o.metric, o.mode) for o in search.objectives]
    try:
        runs = json.loads((path / STATE_FILE).read_text()) if (path / STATE_FILE).exists() else {}
    except (ValueError, UnicodeDecodeError) as err:
        raise UserError(f"{path / STATE_FILE}: garbled ({err})") from None
    if path.parent.name == "searches":  # <store>/searches/<dir>: the store it was logged to
        store = path.parent.parent
    max_epochs = None
    try:
        max_epochs = int(json.loads((path / BUDGET).read_text())["max_epochs"])
    except (OSError, ValueError, KeyError, TypeError):
        pass  # no budget record (older search): trials' end states stay unknown
    return SearchRef(name, path, objectives, tracking_uri or default_tracking_uri(store),
                     runs.get("parent"), runs.get("trials", {}), runs.get("logged", {}), max_epochs)


def find_search(search: str, store: str | os.PathLike = "mlruns", tracking_uri: str | None = None) -> SearchRef:
    """``search``: a search directory, a search name (its latest ``<store>/searches/<name>-*``) or an MLflow
    parent run id; :class:`UserError` when it is none of them."""
    store = Path(store).resolve()
    if Path(search).is_dir():
        return _search_ref(Path(search), store, tracking_uri)
    dirs = sorted(p for p in (store / "searches").glob(f"{search}-*")
                  if p.is_dir() and _STAMP.sub("", p.name) == search)
    if dirs:
        return _search_ref(dirs[-1], store, tracking_uri)
    if _RUN_ID.fullmatch(search):
        return _search_ref(_search_dir_of_run(search, store, tracking_uri), store, tracking_uri)
    known = sorted({_STAMP.sub("", p.name) for p in (store / "searches").glob("*-*")})
    raise UserError(f"unknown search {search!r}: not a directory, not a search name under {store / 'searches'} "
                    f"(known: {', '.join(known) or 'none'}), not an MLflow run id")


def _search_dir_of_run(run_id: str, store: Path, tracking_uri: str | None) -> Path:
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from lensearch.search.tracking import default_tracking_uri

    uri = tracking_uri or default_tracking_uri(store)
    try:
        tags = MlflowClient(uri).get_run(run_id).data.tags
    except MlflowException:
        raise UserError(f"unknown search {run_id!r}: no such MLflow run at {uri}") from None
    expect(tags.get("lensearch.kind") == "search" and tags.get("lensearch.search_dir"),
           f"MLflow run {run_id} is not the parent run of a lensearch search (kind "
           f"{tags.get('lensearch.kind')!r}); give the search's parent run id")
    path = Path(tags["lensearch.search_dir"])
    expect(path.is_dir(), f"MLflow run {run_id}: its search directory {path} no longer exists")
    return path


# ------------------------------------------------------------------------------------------- the trial
@dataclass
class Choice:
    """The trial to export and why it was chosen."""

    trial_id: str
    checkpoint: Path
    metrics: dict[str, float]
    run_id: str | None
    reason: str


def _read_checkpoint(path: Path) -> dict[str, Any]:
    try:  # mmap: the tensors stay on disk until used, so ranking many trials stays cheap
        return torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except Exception as err:
        raise UserError(f"{path}: unreadable checkpoint ({type(err).__name__}: {err})") from None


def _trial_rows(ref: SearchRef) -> list:
    from lensearch.search.tracking import end_state
    from lensearch.search.tuner import TRIALS, TrialRow

    rows = []
    for path in sorted((ref.dir / TRIALS).glob("*/checkpoints/best.pt")):
        ckpt = _read_checkpoint(path)
        metrics = {k: float(v) for k, v in ckpt.get("metrics", {}).items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool)}
        trial_id = path.parents[1].name
        # completed vs stopped early decides who may be on a Pareto front (fronts compare equal budgets)
        state = ("finished" if ref.max_epochs is None or trial_id not in ref.logged
                 else end_state({"epoch": int(ref.logged[trial_id])}, ref.max_epochs))
        rows.append(TrialRow(trial_id, state, int(ckpt.get("epoch", 0)), metrics, {}, str(path),
                             ref.run_ids.get(trial_id)))
    expect(rows, f"search {ref.dir}: no finished trial (no trials/*/checkpoints/best.pt); nothing to export")
    return rows


def _mode(metric: str, objectives: list[tuple[str, str]]) -> str:
    from lensearch.search.tuner import COST_METRICS
    from lensearch.training.config import MONITORABLE

    modes = {**MONITORABLE, **dict.fromkeys(COST_METRICS, "min"), **dict(objectives)}
    expect(metric in modes, f"--metric {metric}: no known direction; give --mode max or --mode min")
    return modes[metric]


def choose_trial(ref: SearchRef, metric: str | None = None, mode: str | None = None,
                 trial: str | None = None) -> Choice:
    """The trial ``trial``, else the best finished trial by ``metric`` (default: the first objective)."""
    from lensearch.search.tuner import SearchOutcome, pareto_front

    rows = _trial_rows(ref)
    outcome = SearchOutcome(ref.name, ref.dir, ref.objectives, rows, ref.parent_run_id, ref.tracking_uri, 0.0)
    front = ""
    if len(ref.objectives) > 1:
        front = (f"; multi-objective search ({', '.join(f'{m} {d}' for m, d in ref.objectives)}), Pareto front: "
                 f"{', '.join(r.trial_id for r in pareto_front(outcome)) or 'empty'}")
    if trial is not None:
        row = next((r for r in rows if r.trial_id == trial), None)
        expect(row, f"--trial {trial}: no finished trial with that id in {ref.dir}; finished: "
                    f"{', '.join(r.trial_id for r in rows)}")
        reason = f"trial {trial} chosen with --trial" + front
    else:
        metric = metric or ref.objectives[0][0]
        mode = mode or _mode(metric, ref.objectives)
        outcome.objectives = [(metric, mode)]
        row = outcome.best()
        expect(row, f"--metric {metric}: not reported by any finished trial; reported: "
                    f"{', '.join(sorted(rows[0].best))}")
        reason = f"best {metric} ({mode}) of {len(rows)} finished trial(s)"
        if front:
            reason += front + "; exported the best by the first objective (pick a front point with --trial)"
    return Choice(row.trial_id, Path(row.checkpoint), row.best, row.run_id, reason)


# ------------------------------------------------------------------------------------------- the graphs
def load_network(ckpt: dict[str, Any]) -> torch.nn.Module:
    """The bare network of a checkpoint, with the weights to evaluate (``eval_model``: EMA when enabled)."""
    from lensearch.models import registry

    net = registry.build(ckpt["model_name"], scale=ckpt["scale"], in_channels=ckpt["in_channels"],
                         **ckpt["model_params"])
    net.load_state_dict(ckpt["eval_model"])
    return net.eval()


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


def _export_torchscript(model: RawImageSR, example: torch.Tensor, path: Path) -> torch.jit.ScriptModule:
    with torch.no_grad():
        traced = _run_exporter("TorchScript trace", lambda: torch.jit.trace(model, example, check_trace=False))
    torch.jit.save(traced, str(path))
    return torch.jit.load(str(path))


def _export_onnx(model: RawImageSR, example: torch.Tensor, path: Path) -> Callable[[np.ndarray], np.ndarray]:
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


def _verification_inputs(path: Path) -> list[torch.Tensor]:
    """A validation batch, an odd-sized crop and a MIN_SIDE crop (dynamic shapes, down to the smallest)."""
    from lensearch.data.store import iter_batches

    lr = torch.from_numpy(next(iter_batches(path, "val", VERIFY_IMAGES, ("lr",)))["lr"])
    h, w = lr.shape[-2:]
    return [lr, lr[:1, :, : max(h - 1, MIN_SIDE), : max(w - 3, MIN_SIDE)], lr[:1, :, :MIN_SIDE, : MIN_SIDE + 1]]


# ------------------------------------------------------------------------------------------- scoring
@torch.no_grad()
def score_split(model: torch.nn.Module, path: Path, split: str, batch_size: int = 32,
                device: str | torch.device = "cpu") -> dict[str, Any]:
    """The model's PSNR/SSIM/MSE on ``split`` (``*_clean`` too when the file has hr_clean), with bicubic's
    and the noise ceiling from :func:`lensearch.data.baseline.baseline_metrics` on the same images."""
    from lensearch.data.baseline import baseline_metrics
    from lensearch.data.store import iter_batches, open_h5
    from lensearch.metrics import METRIC_NAMES, MetricSums

    info = open_h5(path)
    keys = ("lr", "hr", "hr_clean") if info.has_clean else ("lr", "hr")
    sums = MetricSums([*METRIC_NAMES, *(f"{k}_clean" for k in METRIC_NAMES)] if info.has_clean else METRIC_NAMES)
    model = model.to(device).eval()
    for batch in iter_batches(path, split, batch_size, keys):
        t = {k: torch.from_numpy(batch[k]).to(device) for k in keys}
        sr = model(t["lr"]).float()
        sums.update(sr, t["hr"])
        if info.has_clean:
            sums.update(sr, t["hr_clean"], suffix="_clean")
    base = baseline_metrics(path, split=split, methods=["bicubic"], batch_size=batch_size, device=device)
    return {"n": base["n"], "model": sums.means(), "bicubic": base["methods"]["bicubic"],
            "noise_ceiling": base["noise_ceiling"]}


def _cost(net: torch.nn.Module, traced: torch.nn.Module, lr_shape: tuple[int, ...]) -> dict[str, Any]:
    from lensearch.models.cost import measure_latency, model_cost

    cost = model_cost(net.cpu(), lr_shape)
    return {**cost, "latency_ms_torchscript": measure_latency(traced, lr_shape), "lr_shape": list(lr_shape),
            "device": "cpu", "threads": torch.get_num_threads()}


# ------------------------------------------------------------------------------------------- the folder
def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _data_path(ckpt: dict[str, Any], override: str | os.PathLike | None) -> Path:
    if override is not None:
        return Path(override).resolve()
    candidates = [ckpt.get("data_path"), (ckpt.get("config") or {}).get("data", {}).get("path")]
    for c in candidates:
        if c and Path(c).is_file():
            return Path(c).resolve()
    raise UserError(f"the trial's data file ({next((c for c in candidates if c), 'unknown')}) is missing; "
                    f"pass --data FILE.h5 (the HDF5 file it was trained on)")


def _prepare_out(out: Path, overwrite: bool) -> Path:
    """A fresh hidden partial folder beside ``out``; ``out`` may exist only empty, or as an earlier export
    with ``overwrite`` (never anything else: it is replaced at the end)."""
    expect(not out.exists() or out.is_dir(), f"--out {out}: exists and is not a directory")
    if out.exists() and any(out.iterdir()):
        expect(overwrite, f"--out {out}: exists and is not empty (use --overwrite to replace an earlier export)")
        expect((out / MANIFEST).is_file(), f"--out {out}: --overwrite replaces only an earlier export folder "
                                           f"(one with {MANIFEST}); this one has none")
    tmp = out.with_name(f".{out.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def _write_model_files(tmp: Path, model: RawImageSR, ckpt: dict[str, Any], data: Path,
                       log: Callable[[str], None]) -> tuple[dict[str, Any], torch.nn.Module]:
    """Trace, export and verify both graphs into ``tmp``; returns the manifest's model part and the trace."""
    from lensearch.models import registry

    spec = registry.get(ckpt["model_name"])
    inputs = _verification_inputs(data)
    with torch.no_grad():
        want = [model(x).numpy() for x in inputs]
    torch.save(model.net.state_dict(), tmp / FILES["state_dict"])
    (tmp / FILES["config"]).write_text(yaml.safe_dump(ckpt["config"], sort_keys=False))
    (tmp / FILES["normalization"]).write_text(json.dumps(ckpt["normalization"], indent=1))

    log("tracing TorchScript")
    traced = _export_torchscript(model, inputs[0], tmp / FILES["torchscript"])
    with torch.no_grad():
        verification = {"torchscript": verify_parity("TorchScript", [traced(x).numpy() for x in inputs], want)}
    onnx = {"opset": ONNX_OPSET, "skipped": spec.export_notes or None}
    if spec.export_notes:
        log(f"ONNX skipped for {spec.name}: {spec.export_notes}")
    else:
        log(f"exporting ONNX (opset {ONNX_OPSET}, dynamic N/H/W)")
        run = _export_onnx(model, inputs[0], tmp / FILES["onnx"])
        verification["onnx"] = verify_parity("ONNX", [run(x.numpy()) for x in inputs], want)
    files = {k: v for k, v in FILES.items() if (tmp / v).exists() and k != "card"}
    return {"files": files, "sha256": {v: _sha256(tmp / v) for v in files.values()}, "onnx": onnx,
            "verification": verification}, traced


def export_search(search: str, out: str | os.PathLike, *, store: str | os.PathLike = "mlruns",
                  tracking_uri: str | None = None, metric: str | None = None, mode: str | None = None,
                  trial: str | None = None, data: str | os.PathLike | None = None, register: bool = True,
                  registered_name: str | None = None, batch_size: int = 32, device: str = "cpu",
                  overwrite: bool = False, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Export a trial of ``search`` (see :func:`find_search`, :func:`choose_trial`) into ``out``; returns the
    manifest (also written as ``out/export.json``). The folder appears only once everything succeeded."""
    from lensearch import export_card
    from lensearch.data.store import open_h5
    from lensearch.data.transforms import build_normalization

    log = log or (lambda text: print(f"lensearch export: {text}", file=sys.stderr, flush=True))
    device = parse_device(device)
    ref = find_search(search, store, tracking_uri)
    choice = choose_trial(ref, metric, mode, trial)
    log(f"trial {choice.trial_id}: {choice.reason}")
    ckpt = _read_checkpoint(choice.checkpoint)
    missing = [k for k in _CHECKPOINT_KEYS if k not in ckpt]
    expect(not missing, f"{choice.checkpoint}: not a lensearch checkpoint (missing {', '.join(missing)})")
    data_path = _data_path(ckpt, data)
    info = open_h5(data_path)
    expect(info.splits.get("val"), f"{data_path}: the val split is empty; the export is verified on it")
    expect(info.scale == ckpt["scale"], f"{data_path}: scale {info.scale}, but the model upscales "
                                        f"{ckpt['scale']}x")
    model = RawImageSR(load_network(ckpt), build_normalization(ckpt["normalization"])).eval()

    out = Path(out).resolve()
    tmp = _prepare_out(out, overwrite)
    try:
        manifest = _manifest_head(ckpt, ref, choice, info)
        files, traced = _write_model_files(tmp, model, ckpt, data_path, log)
        manifest.update(files)
        manifest["cost"] = _cost(model.net, traced, (1, ckpt["in_channels"], *info.lr_shape))
        splits = [s for s in ("val", "test") if info.splits.get(s)]
        log(f"scoring {' and '.join(splits)} against bicubic on {data_path.name}")
        manifest["metrics"] = {s: score_split(model, data_path, s, batch_size, device) for s in splits}
        (tmp / FILES["card"]).write_text(export_card.render(manifest, ckpt["config"]))
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))  # the registered copy must be complete
        if register:
            name = registered_name or f"lensearch-{ref.name}"
            manifest["registered"] = register_export(tmp, manifest, ref, name)
            log(f"registered as MLflow model '{name}' version {manifest['registered']['version']}")
            (tmp / FILES["card"]).write_text(export_card.render(manifest, ckpt["config"]))  # with the version
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def _manifest_head(ckpt: dict[str, Any], ref: SearchRef, choice: Choice, info) -> dict[str, Any]:
    from lensearch.models import registry

    spec = registry.get(ckpt["model_name"])
    return {
        "format": "lensearch-export", "format_version": EXPORT_FORMAT, "lensearch_version": __version__,
        "exported_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "versions": _versions(),
        "model": {"name": spec.name, "kind": spec.kind, "summary": spec.summary, "params": ckpt["model_params"],
                  "scale": ckpt["scale"], "in_channels": ckpt["in_channels"], "min_side": MIN_SIDE,
                  "normalization": ckpt["normalization"]},
        "source": {"search": ref.name, "search_dir": str(ref.dir), "objectives": ref.objectives,
                   "trial_id": choice.trial_id, "selection": choice.reason, "checkpoint": str(choice.checkpoint),
                   "epoch": ckpt["epoch"], "trial_metrics": choice.metrics, "tracking_uri": ref.tracking_uri,
                   "parent_run_id": ref.parent_run_id, "run_id": choice.run_id},
        "data": {"path": str(info.path), "n": info.n, "hr_shape": list(info.hr_shape),
                 "lr_shape": list(info.lr_shape), "scale": info.scale, "has_clean": info.has_clean,
                 "splits": info.splits, "class_names": info.class_names,
                 "attrs": {k: v for k, v in info.attrs.items() if k not in ("complete", "class_names")}},
    }


def _versions() -> dict[str, str]:
    import onnx
    import onnxruntime

    return {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}


# ------------------------------------------------------------------------------------------- MLflow
def register_export(folder: Path, manifest: dict[str, Any], ref: SearchRef, name: str) -> dict[str, Any]:
    """Log ``folder`` to a new MLflow run (kind ``export``, in the search's experiment, with the test and
    validation metrics) and register it as a new version of model ``name`` with the card as description."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from lensearch.search.tracking import get_experiment_id

    client = MlflowClient(ref.tracking_uri)
    src = manifest["source"]
    try:
        experiment = (client.get_run(ref.parent_run_id).info.experiment_id if ref.parent_run_id
                      else get_experiment_id(client, ref.name, None))
        run = client.create_run(experiment, run_name=f"export-{src['trial_id']}", tags={
            "lensearch.kind": "export", "lensearch.trial_id": src["trial_id"],
            "lensearch.search_dir": src["search_dir"], "lensearch.search_run_id": ref.parent_run_id or "",
            "lensearch.trial_run_id": src["run_id"] or ""})
        run_id = run.info.run_id
        client.log_param(run_id, "model", manifest["model"]["name"])
        metrics = _flat_metrics(manifest["metrics"])
        for key, value in metrics.items():
            client.log_metric(run_id, key, value)
        client.log_artifacts(run_id, str(folder), artifact_path="model")
        client.set_terminated(run_id)
        try:
            client.create_registered_model(name, description=f"lensearch models exported from search '{ref.name}'")
        except MlflowException as err:
            if err.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        card = (folder / FILES["card"]).read_text()
        if len(card) > _CARD_LIMIT:
            card = card[: _CARD_LIMIT - 80] + "\n\n(truncated; the full card is model/MODEL_CARD.md)"
        version = client.create_model_version(
            name, source=f"{run.info.artifact_uri}/model", run_id=run_id, description=card,
            tags={"trial_id": src["trial_id"], "search": ref.name, **{k: f"{v:.6g}" for k, v in metrics.items()}})
    except MlflowException as err:
        raise UserError(f"MLflow registration at {ref.tracking_uri} failed: {err.message}; "
                        f"use --tracking-uri, --registered-name or --no-register") from None
    return {"name": name, "version": int(version.version), "run_id": run_id, "tracking_uri": ref.tracking_uri}


def _flat_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """``{"test_psnr", "test_bicubic_psnr", "test_noise_ceiling_psnr", ...}`` (finite values only)."""
    out = {}
    for split, m in metrics.items():
        for who in ("model", "bicubic", "noise_ceiling"):
            prefix = f"{split}_" if who == "model" else f"{split}_{who}_"
            out.update({prefix + k: float(v) for k, v in (m[who] or {}).items() if np.isfinite(v)})
    return out


# ------------------------------------------------------------------------------------------- reading
def read_export(model_dir: str | os.PathLike, need: tuple[str, ...] = ()) -> dict[str, Any]:
    """The manifest of an export folder, checked: format, and presence and SHA-256 of the files in
    ``need`` (keys of :data:`FILES`); one-line :class:`UserError` for anything missing or garbled."""
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
            expect(_sha256(root / name) == manifest["sha256"][name],
                   f"{root / name}: corrupted (SHA-256 differs from {MANIFEST})")
    except (KeyError, TypeError, AttributeError) as err:
        raise UserError(f"{root / MANIFEST}: garbled (missing {err})") from None
    return manifest
