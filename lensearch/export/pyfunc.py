"""The export as an MLflow ``pyfunc`` model: ``mlflow.pyfunc.load_model("models:/<name>@champion")``.

The pyfunc wraps the export's verified TorchScript graph (the same file ``lensearch upscale`` runs), so the
MLflow model and the export folder give the same output. Input and output are (N, 1, h, w) float32 arrays
in the data's physical units; h and w are free (at least the export's ``min_side``). Loading needs
``lensearch`` importable (the wrapper class is referenced by module, not copied).

This module imports MLflow at import time: only :mod:`lensearch.export.register` imports it, lazily.
"""

from __future__ import annotations

from pathlib import Path

import mlflow.pyfunc
import numpy as np

__all__ = ["TorchScriptSR", "save_pyfunc"]


class TorchScriptSR(mlflow.pyfunc.PythonModel):
    """Applies the export's TorchScript graph to a float32 (N, C, h, w) batch; returns (N, C, s*h, s*w)."""

    def load_context(self, context):
        import torch

        self.graph = torch.jit.load(context.artifacts["torchscript"], map_location="cpu").eval()

    def predict(self, context, model_input, params=None):
        import torch

        x = np.asarray(model_input, dtype=np.float32)
        if x.ndim != 4:
            raise ValueError(f"expected a (N, C, h, w) float32 batch, got shape {x.shape}")
        with torch.no_grad():
            return self.graph(torch.from_numpy(np.ascontiguousarray(x))).numpy()


def save_pyfunc(path: Path, torchscript: Path, example: np.ndarray, in_channels: int) -> None:
    """Write an MLflow model (MLmodel, signature, input example, requirements) for ``torchscript`` to
    ``path``; ``example`` is a (N, C, h, w) float32 batch of low-resolution images."""
    import torch
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    example = np.ascontiguousarray(example, dtype=np.float32)
    signature = ModelSignature(inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, in_channels, -1, -1))]),
                               outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, in_channels, -1, -1))]))
    requirements = [f"torch=={torch.__version__.split('+')[0]}", f"mlflow=={mlflow.__version__}",
                    f"numpy=={np.__version__}", "lensearch"]
    mlflow.pyfunc.save_model(str(path), python_model=TorchScriptSR(), artifacts={"torchscript": str(torchscript)},
                             signature=signature, input_example=example, pip_requirements=requirements)
