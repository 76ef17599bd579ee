"""The ``--device`` option: ``cpu``, ``cuda`` or ``cuda:N``, checked against the machine."""

from __future__ import annotations

import torch

from lensearch.errors import expect

__all__ = ["parse_device"]


def parse_device(name: str) -> torch.device:
    """``cpu``, ``cuda`` or ``cuda:N`` as a device; :class:`UserError` for anything else or a missing GPU."""
    try:
        dev = torch.device(name)
    except RuntimeError:
        dev = None
    expect(dev is not None and dev.type in ("cpu", "cuda"), f"--device {name}: expected cpu, cuda or cuda:N")
    expect(dev.type == "cpu" or torch.cuda.is_available(), f"--device {name}: no CUDA device is available")
    return dev
