"""Checkpoint files: written atomically (temp file + rename), so an interruption never leaves a torn file.

:func:`capture_rng_state` / :func:`restore_rng_state` save and put back every random number generator a
training epoch draws from (torch CPU and CUDA, numpy's legacy global generator, Python's ``random``), so a
resumed run continues the random sequence instead of replaying the first epoch's augmentations and noise.
"""

from __future__ import annotations

import errno
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch


LOW_DISK_BYTES = 64 << 20  # a failed write with less than this free on the disk is taken for a full disk


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (usually a full disk); the previous checkpoint file is intact.

    Raised in place of torch's ``RuntimeError: [enforce fail at inline_container.cc:...] unexpected pos``,
    which is what a full disk looks like from ``torch.save``.
    """


def _write_atomically(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
        return
    except (OSError, RuntimeError) as err:
        full = getattr(err, "errno", None) in (errno.ENOSPC, errno.EDQUOT)
        if not full and shutil.disk_usage(path.parent).free >= LOW_DISK_BYTES:
            tmp.unlink(missing_ok=True)
            raise
    # Out of the except block, the failed writer (and the file it holds open) is released with the exception;
    # only then does removing the partial file give its space back.
    tmp.unlink(missing_ok=True)
    free = shutil.disk_usage(path.parent).free
    raise CheckpointWriteError(errno.ENOSPC, f"no space left on the device to write a checkpoint "
                                             f"({free / 2**20:.1f} MiB free; the previous file is kept; free "
                                             f"some space or remove old searches)", str(path))


def save_checkpoint(payload: dict[str, Any], path: Path, best_path: Path | None = None) -> None:
    """Write ``payload`` to ``path``; also copy it to ``best_path`` when given.

    Each file is written to a temporary name and renamed, so a failure never leaves a torn file. On a full
    disk the temporary file is removed and :class:`CheckpointWriteError` names the file and the free space.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomically(path, lambda tmp: torch.save(payload, tmp))
    if best_path is not None:
        _write_atomically(Path(best_path), lambda tmp: shutil.copyfile(path, tmp))


def load_checkpoint(path: Path, map_location: Any = "cpu") -> dict[str, Any] | None:
    """The checkpoint at ``path``, or ``None`` when there is none yet."""
    path = Path(path)
    if not path.is_file():
        return None
    return torch.load(path, map_location=map_location, weights_only=False)


def capture_rng_state() -> dict[str, Any]:
    """The state of every global RNG a training process uses (picklable; store it in a checkpoint).

    Keys: ``torch`` (CPU generator), ``cuda`` (one state per visible device; ``None`` when CUDA is not
    initialised), ``numpy`` (the legacy global ``np.random`` state), ``python`` (``random.getstate()``).
    """
    cuda = None
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        cuda = [s.cpu() for s in torch.cuda.get_rng_state_all()]
    return {"torch": torch.get_rng_state(), "cuda": cuda, "numpy": np.random.get_state(),
            "python": random.getstate()}


def restore_rng_state(state: dict[str, Any] | None, rank: int = 0) -> None:
    """Put back a :func:`capture_rng_state` state; the next draws are the ones that followed the capture.

    Missing keys (an older checkpoint) leave that generator as it is. CUDA states are restored on as many
    devices as both the state and this process have (a resume may see another number of devices).

    ``rank`` > 0 (a DDP worker restoring the state rank 0 saved): after the restore every generator is
    re-seeded from the restored torch generator plus ``rank``, so ranks draw different (and still
    reproducible) streams instead of all replaying rank 0's.
    """
    if not state:
        return
    if state.get("torch") is not None:
        torch.set_rng_state(torch.as_tensor(state["torch"], dtype=torch.uint8).cpu())
    if state.get("cuda") is not None and torch.cuda.is_available():
        for device, s in enumerate(state["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(torch.as_tensor(s, dtype=torch.uint8).cpu(), device)
    if state.get("numpy") is not None:
        np.random.set_state(state["numpy"])
    if state.get("python") is not None:
        random.setstate(state["python"])
    if rank > 0:
        seed = int(torch.randint(0, 2**31 - 1, ()).item()) + int(rank)
        torch.manual_seed(seed)  # CPU and every CUDA device
        np.random.seed(seed % 2**32)
        random.seed(seed)

