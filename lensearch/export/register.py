"""Registering an export folder in the MLflow Model Registry (a new version of a registered model).

The export run is a child of the search's parent run (so it sits under its search in the MLflow UI); it holds
the export folder (``model/``) and an MLflow ``pyfunc`` model of its TorchScript graph (``pyfunc/``, with a
signature and an input example), and that pyfunc is what the new model version points at. The newest
version gets the alias ``champion``: ``mlflow.pyfunc.load_model("models:/<name>@champion")``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from lensearch.errors import UserError
from lensearch.export.layout import FILES
from lensearch.export.locate import SearchRef

__all__ = ["register_export"]

ALIAS = "champion"
_CARD_LIMIT = 5000  # MLflow keeps at most 5000 characters of a model version's description


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
        nest = {"mlflow.parentRunId": ref.parent_run_id} if ref.parent_run_id else {}
        run = client.create_run(experiment, run_name=f"export-{src['trial_id']}", tags={
            **nest, "lensearch.kind": "export", "lensearch.trial_id": src["trial_id"],
            "lensearch.search_dir": src["search_dir"], "lensearch.search_run_id": ref.parent_run_id or "",
            "lensearch.trial_run_id": src["run_id"] or ""})
        run_id = run.info.run_id
        client.log_param(run_id, "model", manifest["model"]["name"])
        metrics = flat_metrics(manifest["metrics"])
        for key, value in metrics.items():
            client.log_metric(run_id, key, value)
        client.log_artifacts(run_id, str(folder), artifact_path="model")
        _log_pyfunc(client, run_id, folder, manifest)
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
            name, source=f"{run.info.artifact_uri}/pyfunc", run_id=run_id, description=card,
            tags={"trial_id": src["trial_id"], "search": ref.name, **{k: f"{v:.6g}" for k, v in metrics.items()}})
        client.set_registered_model_alias(name, ALIAS, version.version)
    except MlflowException as err:
        raise UserError(f"MLflow registration at {ref.tracking_uri} failed: {err.message}; "
                        f"use --tracking-uri, --registered-name or --no-register") from None
    return {"name": name, "version": int(version.version), "alias": ALIAS, "run_id": run_id,
            "model_uri": f"models:/{name}@{ALIAS}", "tracking_uri": ref.tracking_uri}


def _log_pyfunc(client, run_id: str, folder: Path, manifest: dict[str, Any]) -> None:
    """Save the pyfunc of ``folder``'s TorchScript graph (input example: two validation LR images) and log it
    to the run under ``pyfunc/``."""
    import tempfile

    from lensearch.data.h5format import iter_batches
    from lensearch.export.pyfunc import save_pyfunc

    example = next(iter_batches(manifest["data"]["path"], "val", 2, ("lr",)))["lr"]
    with tempfile.TemporaryDirectory() as tmp:
        save_pyfunc(Path(tmp) / "pyfunc", folder / FILES["torchscript"], example, manifest["model"]["in_channels"])
        client.log_artifacts(run_id, str(Path(tmp) / "pyfunc"), artifact_path="pyfunc")


def flat_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """``{"test_psnr", "test_bicubic_psnr", "test_noise_ceiling_psnr", ...}`` (finite values only)."""
    out = {}
    for split, m in metrics.items():
        for who in ("model", "bicubic", "noise_ceiling"):
            prefix = f"{split}_" if who == "model" else f"{split}_{who}_"
            out.update({prefix + k: float(v) for k, v in (m[who] or {}).items() if np.isfinite(v)})
    return out
