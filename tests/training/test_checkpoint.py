"""Checkpoint files and the RNG state that a resumed run must continue from."""

from __future__ import annotations

import errno
import os
import random
import subprocess

import numpy as np
import pytest
import torch

from lensearch.training.checkpoint import (CheckpointWriteError, capture_rng_state, load_checkpoint, restore_rng_state,
                                          save_checkpoint)


def _draws() -> dict:
    out = {"torch": torch.rand(5), "numpy": np.random.rand(5), "python": [random.random() for _ in range(5)],
           "randint": torch.randint(0, 2**62, (3,))}
    if torch.cuda.is_available():
        out["cuda"] = torch.rand(5, device="cuda").cpu()
    return out


def _same(a: dict, b: dict) -> bool:
    return all(np.array_equal(np.asarray(a[k]), np.asarray(b[k])) for k in a)


def test_restore_reproduces_the_next_draws_of_every_generator(tmp_path):
    torch.manual_seed(3)
    np.random.seed(3)
    random.seed(3)
    _draws()  # somewhere in the middle of a run
    state = capture_rng_state()
    save_checkpoint({"rng": state}, tmp_path / "last.pt")  # the state survives a checkpoint file
    expected = _draws()
    _draws()  # the run goes on, then is interrupted
    restore_rng_state(load_checkpoint(tmp_path / "last.pt")["rng"])
    assert _same(_draws(), expected)
    restore_rng_state(state)
    assert _same(_draws(), expected)


def test_restore_without_a_state_or_with_missing_keys_leaves_generators_alone():
    torch.manual_seed(1)
    want = torch.rand(3)
    torch.manual_seed(1)
    restore_rng_state(None)
    restore_rng_state({"numpy": None})
    assert torch.equal(torch.rand(3), want)


def test_other_ranks_get_distinct_reproducible_streams():
    torch.manual_seed(0)
    state = capture_rng_state()
    streams = []
    for rank in (0, 1, 2, 1):
        restore_rng_state(state, rank=rank)
        streams.append(_draws())
    assert _same(streams[1], streams[3])  # reproducible per rank
    assert not _same(streams[0], streams[1]) and not _same(streams[1], streams[2])


def test_a_full_disk_is_a_clear_error_and_keeps_the_previous_checkpoint(tmp_path):
    """A real full disk: a 512 KiB tmpfs (needs permission to mount one; skipped otherwise)."""
    small = tmp_path / "small"
    small.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(small)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.strip()}")
    try:
        last, best = small / "last.pt", small / "best.pt"
        save_checkpoint({"epoch": 1, "w": torch.ones(1000)}, last, best)
        with pytest.raises(CheckpointWriteError) as err:
            save_checkpoint({"epoch": 2, "w": torch.ones(400_000)}, last, best)  # 1.6 MB > 512 KiB
        assert err.value.errno == errno.ENOSPC and isinstance(err.value, OSError)
        assert "no space left" in str(err.value) and str(last) in str(err.value) and "\n" not in str(err.value)
        assert sorted(os.listdir(small)) == ["best.pt", "last.pt"]  # no partial .tmp file left taking space
        for path in (last, best):
            assert load_checkpoint(path)["epoch"] == 1  # the previous checkpoint is intact
    finally:
        subprocess.run(["umount", str(small)], check=False)
