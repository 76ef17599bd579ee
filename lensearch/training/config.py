"""The run configuration: one fully specified training setup.

A run configuration is what ``lensearch train RUN.yaml`` reads and what every search trial receives (one
sampled point of a search space has exactly these keys). Sections whose value is a choice carry the
choice under ``name`` and the chosen component's parameters beside it::

    data:          {path: data/tiny.h5, preset: tiny, count: 512, seed: 0, non_lens: false}
    model:         {name: rdn, num_features: 16, num_blocks: 3}      # params go to the model registry
    discriminator: {base_channels: 16}                               # GAN models only
    normalization: {name: asinh, softening: 0.1}
    augment:       {flips: true, rot90: true, lr_noise_std: 0.0}
    optimizer:     {name: adam, lr: 2.0e-4, weight_decay: 0.0}
    scheduler:     {name: cosine}
    loss:          {pixel: l1, pixel_weight: 1.0, ssim_weight: 0.0, adv_weight: 5.0e-3}
    train:         {epochs: 10, batch_size: 16, monitor: val_psnr, ...}

Every section is optional; :func:`run_config` (typed, :class:`RunConfig`) and :func:`resolve_run_config` (the
same as a plain mapping) fill defaults and validate the sections it owns (``train``, ``data``) with key paths in
its errors. Components validate their own sections when they are
built (model registry, normalization, optimizer/scheduler builders, loss builder).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from lensearch.errors import expect
from lensearch.typed import Invalid, Typed, boolean, checked, integer, number, one_of, parse, string
from lensearch.yamlfile import read_yaml

MONITORABLE = {
    "val_psnr": "max", "val_ssim": "max", "val_mse": "min", "val_loss": "min",
    "val_psnr_clean": "max", "val_ssim_clean": "max", "val_mse_clean": "min",
    "val_downstream_auc": "max",  # a search's frozen classifier on the SR val images (training/frozen_classifier.py)
}


def _at_least(low: int, note: str = "") -> object:
    return integer(low, text="expected an integer", range_text=f"expected >= {low}{note}")


class TrainSection(Typed):
    """The ``train`` section: how one run trains."""

    epochs: _at_least(1) = 10                # reports ("epochs") per run; each is one pass, or steps_per_epoch steps
    batch_size: _at_least(1) = 16
    patch_size: _at_least(0, " (0 = whole images)") = 0  # HR px of random training patches (multiple of the scale)
    steps_per_epoch: _at_least(0, " (0 = one pass over the data)") = 0  # optimizer steps between reports
    # stop after the first report past this many seconds of the run; 0 = none
    time_limit_s: number(0, text="expected a number", range_text="expected >= 0 (0 = none)") = 0.0
    monitor: one_of(*MONITORABLE) = "val_psnr"  # metric that picks the best checkpoint (and the plateau scheduler's)
    grad_clip: number(0, text="expected a number", range_text="expected >= 0 (0 = off)") = 0.0  # max grad norm
    # EMA of generator weights (warmed up: decay ramps as (1+n)/(10+n)); 0 disables
    ema_decay: number(0, 1, high_exclusive=True, text="expected a number", range_text="expected in [0, 1)") = 0.0
    amp: one_of("auto", "off", "bf16", "fp16") = "auto"  # GPU only; auto = bf16 where supported
    gan_warmup_epochs: _at_least(0) = 0      # PSNR-oriented generator epochs before adversarial training
    d_lr_factor: number(0, exclusive=True, text="expected a number", range_text="expected > 0") = 1.0  # D lr = G lr * factor
    val_max_images: _at_least(0, " (0 = whole split)") = 0  # cap on validation images per epoch
    num_workers_loader: _at_least(0) = 0     # DataLoader worker processes per training worker
    seed: integer(text="expected an integer") = 0
    # a checkpoint whose weights, EMA and optimizer state start this run (its schedule and counters start afresh):
    # a search's refit phase
    init_from: string() = ""


class DataSection(Typed):
    """The ``data`` section, shared by run configurations and search files: a store file, or what to simulate."""

    path: string(none=True) = None           # an HDF5 store file (simulated on first use when missing)
    preset: string(none=True) = "tiny"       # what to simulate into it
    count: integer(16) = 512
    seed: integer(0) = 0
    non_lens: boolean() = False              # simulate non-lenses too (every 4th image; lens finding)

    def resolved(self) -> "DataSection":
        """An explicit ``path`` without an explicit ``preset``: a missing file is an error, not a cue to
        simulate into it (``preset`` becomes None)."""
        if self.path and "preset" not in self.model_fields_set:
            return self.model_copy(update={"preset": None})
        return self


TRAIN_DEFAULTS: dict[str, Any] = TrainSection.defaults()
DATA_DEFAULTS: dict[str, Any] = DataSection.defaults()


def _choice(section: str, default: str):
    """A choice section: ``{name: X, **params}`` (null or {}: the default; a bare name, except for ``model``,
    is read as ``{name: X}``)."""

    def check(value: Any) -> dict[str, Any]:
        if value is None or value == {}:
            return {"name": default}
        if isinstance(value, str) and section != "model":
            return {"name": value}
        if not isinstance(value, dict) or not isinstance(value.get("name"), str):
            raise Invalid("expected a mapping with a 'name'")
        return dict(value)

    return checked(check, dict[str, Any])


def _open(value: Any) -> dict[str, Any]:
    """A section validated by its component (augment, loss, discriminator): passed on as given (null: {})."""
    return {} if value is None else value


class RunConfig(Typed):
    """A whole run configuration (see the module docstring). ``model``, ``normalization``, ``optimizer`` and
    ``scheduler`` are choice sections (``name`` plus the component's parameters) and ``augment``, ``loss``,
    ``discriminator`` component sections: each is validated by its component's registry
    (:func:`lensearch.training.validate.check_run_config`)."""

    unknown_noun = "section"
    valid_label = "valid sections"

    data: DataSection = DataSection()
    model: _choice("model", "rdn") = {"name": "rdn"}
    discriminator: checked(_open, dict[str, Any]) = {}
    normalization: _choice("normalization", "none") = {"name": "none"}
    augment: checked(_open, dict[str, Any]) = {}
    optimizer: _choice("optimizer", "adam") = {"name": "adam"}
    scheduler: _choice("scheduler", "none") = {"name": "none"}  # the learning-rate schedule
    loss: checked(_open, dict[str, Any]) = {}
    train: TrainSection = TrainSection()


SECTIONS = tuple(RunConfig.model_fields)


def run_config(cfg: dict[str, Any] | None) -> RunConfig:
    """``cfg`` validated as a :class:`RunConfig` (defaults filled; ``train`` and ``data`` checked here, the
    component sections by their components)."""
    cfg = copy.deepcopy(cfg or {})
    expect(isinstance(cfg, dict), f"run configuration: expected a mapping, got {cfg!r}")
    typed = parse(RunConfig, cfg)
    return typed.model_copy(update={"data": typed.data.resolved()})


def resolve_run_config(cfg: dict[str, Any] | None) -> dict[str, Any]:
    """Return a copy of ``cfg`` with defaults filled and the ``train``/``data`` sections validated (the plain
    mapping of :func:`run_config`, which is what trials, checkpoints and MLflow carry)."""
    return run_config(cfg).to_dict()


def split_choice(section: dict[str, Any], where: str) -> tuple[str, dict[str, Any]]:
    """``{"name": X, **params}`` -> ``(X, params)``."""
    expect(isinstance(section, dict) and isinstance(section.get("name"), str),
           f"{where}: expected a mapping with a 'name', got {section!r}")
    params = {k: v for k, v in section.items() if k != "name"}
    return section["name"], params


def load_run_config(path: str | Path) -> dict[str, Any]:
    """Read a run-configuration YAML file; errors name the file."""
    return read_yaml(path, "run-configuration", resolve_run_config)
