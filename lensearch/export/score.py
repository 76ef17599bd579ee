"""What an exported model is worth: its metrics on the data file's splits next to bicubic's, and its cost."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

__all__ = ["measure_cost", "score_split"]


def score_split(model: torch.nn.Module, path: Path, split: str, batch_size: int = 32,
                device: str | torch.device = "cpu") -> dict[str, Any]:
    """The model's PSNR/SSIM/MSE on ``split`` (``*_clean`` too when the file has hr_clean), with bicubic's and
    the noise ceiling on the same images, in one pass (:func:`lensearch.evaluation.evaluate_split`)."""
    from lensearch.data.h5format import open_h5
    from lensearch.evaluation import evaluate_split, interpolation

    model = model.to(device).eval()
    scores = evaluate_split(path, split, {"model": lambda lr: model(lr).float(),
                                          "bicubic": interpolation("bicubic", open_h5(path).hr_shape)},
                            batch_size=batch_size, device=device)
    return {"n": scores["n"], "model": scores["methods"]["model"], "bicubic": scores["methods"]["bicubic"],
            "noise_ceiling": scores["noise_ceiling"]}


def measure_cost(net: torch.nn.Module, traced: torch.nn.Module, lr_shape: tuple[int, ...]) -> dict[str, Any]:
    """Parameters, FLOPs and eager latency of ``net`` and the TorchScript latency of ``traced`` on CPU."""
    from lensearch.models.cost import measure_latency, model_cost

    cost = model_cost(net.cpu(), lr_shape)
    return {**cost, "latency_ms_torchscript": measure_latency(traced, lr_shape), "lr_shape": list(lr_shape),
            "device": "cpu", "threads": torch.get_num_threads()}
