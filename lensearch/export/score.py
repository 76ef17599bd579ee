"""What an exported model is worth: its metrics on the data file's splits next to bicubic's, and its cost."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

__all__ = ["measure_cost", "score_split"]


@torch.no_grad()
def score_split(model: torch.nn.Module, path: Path, split: str, batch_size: int = 32,
                device: str | torch.device = "cpu") -> dict[str, Any]:
    """The model's PSNR/SSIM/MSE on ``split`` (``*_clean`` too when the file has hr_clean), with bicubic's
    and the noise ceiling from :func:`lensearch.data.baseline.baseline_metrics` on the same images."""
    from lensearch.data.baseline import baseline_metrics
    from lensearch.data.h5format import iter_batches, open_h5
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


def measure_cost(net: torch.nn.Module, traced: torch.nn.Module, lr_shape: tuple[int, ...]) -> dict[str, Any]:
    """Parameters, FLOPs and eager latency of ``net`` and the TorchScript latency of ``traced`` on CPU."""
    from lensearch.models.cost import measure_latency, model_cost

    cost = model_cost(net.cpu(), lr_shape)
    return {**cost, "latency_ms_torchscript": measure_latency(traced, lr_shape), "lr_shape": list(lr_shape),
            "device": "cpu", "threads": torch.get_num_threads()}
