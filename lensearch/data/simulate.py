"""Simulated strong-lensing image pairs (HR, LR) with lenstronomy, seeded and reproducible: the entry points.

Physics, instruments, presets and reproducibility: docs/simulation.md; the parts: :mod:`lensearch.data.simulation`.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lensearch.data.simulation.instruments import PRESETS, UNITS, Instrument, Preset
from lensearch.data.simulation.parallel import ordered_map
from lensearch.data.simulation.priors import (CLASS_NAMES, DEFAULT_CLASSES, PARAM_NAMES, Z_LENS, Z_SOURCE, Sky,
                                              draw_sky, point_mass_theta_E)
from lensearch.data.simulation.render import LR_MODES, Renderer, cached_renderer
from lensearch.errors import UserError
from lensearch.typed import Invalid, Typed, boolean, checked, integer, one_of, parse

__all__ = ["CLASS_NAMES", "DEFAULT_CLASSES", "LR_MODES", "PARAM_NAMES", "PRESETS", "UNITS", "Instrument",
           "Preset", "Renderer", "SimConfig", "Sky", "draw_sky", "iter_blocks", "make_config",
           "point_mass_theta_E", "simulate_arrays", "simulate_block", "simulate_to_h5"]

SCALES = (2, 4)


# --------------------------------------------------------------------------------------------- config
def _choices(values: Iterable[Any]) -> str:
    return ", ".join(str(v) for v in values)


def _classes(value: Any) -> tuple[str, ...]:
    """A comma-separated string or a list of class names: known, non-empty, no repeats."""
    names = [c.strip() for c in value.split(",") if c.strip()] if isinstance(value, str) else value
    if not isinstance(names, (list, tuple)):
        raise Invalid(f"expected a list of class names ({_choices(CLASS_NAMES)})")
    for c in names:
        if c not in CLASS_NAMES:
            raise Invalid(f"unknown class {c!r}; valid classes: {_choices(CLASS_NAMES)}", got=False)
    if not names or len(set(names)) != len(names):
        raise Invalid(f"expected a non-empty list without repeats (valid classes: {_choices(CLASS_NAMES)})")
    return tuple(names)


class SimConfig(Typed, frozen=True):
    """Everything that determines a simulated data set, validated by :func:`make_config`."""

    preset: one_of(*PRESETS)
    seed: integer(0)
    scale: one_of(*SCALES) = 2
    lr_mode: one_of(*LR_MODES) = "instrument"
    classes: checked(_classes, tuple[str, ...]) = DEFAULT_CLASSES
    noise_free_hr: boolean() = False
    lens_light: boolean() = False

    @property
    def hr_size(self) -> int:
        return PRESETS[self.preset].hr_size

    @property
    def lr_size(self) -> int:
        return self.hr_size // self.scale

    def attrs(self) -> dict[str, Any]:
        """The file attributes of docs/architecture.md, plus the simulation switches."""
        p = PRESETS[self.preset]
        lr = p.lr(self.scale)
        return {"preset": self.preset, "seed": self.seed, "source": "simulate", "lr_mode": self.lr_mode,
                "pixel_scale_hr": p.hr.pixel_scale, "pixel_scale_lr": lr.pixel_scale,
                "psf_fwhm_hr": p.hr.psf_fwhm, "psf_fwhm_lr": lr.psf_fwhm, "units": UNITS,
                "z_lens": Z_LENS, "z_source": Z_SOURCE, "noise_free_hr": self.noise_free_hr,
                "lens_light": self.lens_light}


class _Amount(Typed):
    count: integer(1)
    workers: integer(1) = 1


def make_config(preset: str, seed: int, *, scale: int = 2, lr_mode: str = "instrument",
                classes: Sequence[str] | str | None = None, include_non_lens: bool = False,
                noise_free_hr: bool = False, lens_light: bool = False) -> SimConfig:
    """Validate the user's choices; each mistake is a one-line :class:`UserError` naming the argument
    (``preset: expected one of model_i, ..., got 'nope'``). ``classes``: a list or a comma-separated string
    (default :data:`DEFAULT_CLASSES`); ``include_non_lens`` adds ``non_lens``."""
    given = {"preset": preset, "seed": seed.item() if isinstance(seed, np.integer) else seed, "scale": scale,
             "lr_mode": lr_mode, "noise_free_hr": bool(noise_free_hr), "lens_light": bool(lens_light)}
    names = [c.strip() for c in classes.split(",") if c.strip()] if isinstance(classes, str) else classes
    if include_non_lens:
        names = list(DEFAULT_CLASSES if names is None else names)
        names += [] if "non_lens" in names else ["non_lens"]
    if names is not None:
        given["classes"] = names
    config = parse(SimConfig, given)
    valid_scales = [s for s in SCALES if config.hr_size % s == 0]
    if config.scale not in valid_scales:
        raise UserError(f"scale: expected one of {_choices(valid_scales)} for preset {preset} "
                        f"(HR {config.hr_size} px), got {scale!r}")
    return config


def _check_amount(count: Any, workers: Any) -> tuple[int, int]:
    """How many images, in how many processes (positive integers)."""
    amount = parse(_Amount, {"count": count, "workers": workers})
    return amount.count, amount.workers


# --------------------------------------------------------------------------------------------- blocks
def simulate_block(config: SimConfig, start: int, stop: int) -> dict[str, np.ndarray]:
    """Images ``start .. stop-1``: ``hr``, ``hr_clean`` (b,1,H,W), ``lr`` (b,1,h,w), ``label``, ``params``."""
    renderer = cached_renderer(config.preset, config.scale, config.lr_mode)
    b, big, small = stop - start, config.hr_size, config.lr_size
    out = {"hr": np.empty((b, 1, big, big), np.float32), "hr_clean": np.empty((b, 1, big, big), np.float32),
           "lr": np.empty((b, 1, small, small), np.float32), "label": np.empty(b, np.int64),
           "params": np.empty((b, len(PARAM_NAMES)), np.float32)}
    for j, i in enumerate(range(start, stop)):
        rng_sky, rng_sub, rng_hr, rng_lr = (np.random.default_rng(s)
                                            for s in np.random.SeedSequence([config.seed, i]).spawn(4))
        label = i % len(config.classes)
        sky = draw_sky(config.classes[label], rng_sky, rng_sub, config.lens_light)
        hr_clean, lr_clean = renderer.render(sky)
        out["hr_clean"][j, 0] = hr_clean
        out["hr"][j, 0] = hr_clean if config.noise_free_hr else renderer.hr.observe(hr_clean, rng_hr)
        out["lr"][j, 0] = renderer.lr.observe(lr_clean, rng_lr)
        out["label"][j] = label
        out["params"][j] = [sky.params[name] for name in PARAM_NAMES]
    return out


def _block_size(config: SimConfig, count: int, workers: int) -> int:
    """About 2^19 HR pixels per block, and at least 4 blocks per worker when there are enough images."""
    return max(1, min(2**19 // config.hr_size**2, math.ceil(count / (4 * workers))))


def _run_block(task: tuple[SimConfig, int, int]) -> dict[str, np.ndarray]:
    return simulate_block(*task)


def iter_blocks(config: SimConfig, count: int, workers: int = 1,
                progress: bool = False) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    """Yield ``(start, block)`` in order over images ``0 .. count-1`` (see :func:`simulate_block`)."""
    from tqdm import tqdm

    size = _block_size(config, count, workers)
    starts = range(0, count, size)
    tasks = ((config, a, min(a + size, count)) for a in starts)
    with tqdm(total=count, unit="img", desc=f"simulate {config.preset}", file=sys.stderr,
              disable=not (progress and sys.stderr.isatty())) as bar:
        for start, block in zip(starts, ordered_map(_run_block, tasks, workers, preload=[__name__])):
            bar.update(len(block["label"]))
            yield start, block


# --------------------------------------------------------------------------------------------- public API
def simulate_arrays(preset: str, count: int, seed: int, *, scale: int = 2, lr_mode: str = "instrument",
                    classes: Sequence[str] | str | None = None, include_non_lens: bool = False,
                    noise_free_hr: bool = False, lens_light: bool = False, workers: int = 1,
                    progress: bool = False) -> dict[str, Any]:
    """Simulate ``count`` images in memory.

    Returns ``hr``, ``hr_clean`` (N,1,H,W) and ``lr`` (N,1,h,w) float32, ``label`` (N,) int64, ``params``
    (N,K) float32, ``param_names``, ``class_names`` and ``attrs`` (the file attributes).
    """
    config = make_config(preset, seed, scale=scale, lr_mode=lr_mode, classes=classes,
                         include_non_lens=include_non_lens, noise_free_hr=noise_free_hr, lens_light=lens_light)
    count, workers = _check_amount(count, workers)
    blocks = [block for _, block in iter_blocks(config, count, workers, progress)]
    out: dict[str, Any] = {k: np.concatenate([b[k] for b in blocks]) for k in blocks[0]}
    out.update(param_names=list(PARAM_NAMES), class_names=list(config.classes), attrs=config.attrs())
    return out


def simulate_to_h5(path: str | Path, preset: str, count: int, seed: int, *, scale: int = 2,
                   lr_mode: str = "instrument", classes: Sequence[str] | str | None = None,
                   include_non_lens: bool = False, noise_free_hr: bool = False, lens_light: bool = False,
                   workers: int = 1, progress: bool = False,
                   split_fractions: Sequence[float] = (0.8, 0.1, 0.1)) -> dict[str, Any]:
    """Simulate ``count`` images straight into a store file (block by block; see :mod:`lensearch.data.store`).

    Returns a summary: ``path``, ``count``, ``hr_shape``, ``lr_shape``, ``class_names``, ``seconds``.
    """
    from lensearch.data.writer import H5Writer

    config = make_config(preset, seed, scale=scale, lr_mode=lr_mode, classes=classes,
                         include_non_lens=include_non_lens, noise_free_hr=noise_free_hr, lens_light=lens_light)
    count, workers = _check_amount(count, workers)
    t0 = time.perf_counter()
    with H5Writer(path, n=count, hr_size=config.hr_size, lr_size=config.lr_size, scale=config.scale,
                  param_names=PARAM_NAMES, class_names=config.classes, with_clean=True, attrs=config.attrs(),
                  split_fractions=split_fractions, split_seed=config.seed) as writer:
        for start, block in iter_blocks(config, count, workers, progress):
            writer.write(start, **block)
    return {"path": Path(path), "count": count, "hr_shape": (config.hr_size,) * 2,
            "lr_shape": (config.lr_size,) * 2, "class_names": list(config.classes),
            "seconds": time.perf_counter() - t0}
