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

Every section is optional; :func:`resolve_run_config` fills defaults and validates the sections it owns
(``train``, ``data``) with key paths in its errors. Components validate their own sections when they are
built (model registry, normalization, optimizer/scheduler builders, loss builder).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from lensearch.errors import UserError, did_you_mean, expect
from lensearch.yamlfile import read_yaml

MONITORABLE = {
    "val_psnr": "max", "val_ssim": "max", "val_mse": "min", "val_loss": "min",
    "val_psnr_clean": "max", "val_ssim_clean": "max", "val_mse_clean": "min",
    "val_downstream_auc": "max",  # a search's frozen classifier on the SR val images (training/frozen_classifier.py)
}

TRAIN_DEFAULTS: dict[str, Any] = {
    "epochs": 10,                   # reports ("epochs") per run; each is one pass, or steps_per_epoch steps
    "batch_size": 16,
    "patch_size": 0,                # HR px of the random training patches (multiple of the scale); 0 = whole images
    "steps_per_epoch": 0,           # optimizer steps between reports; 0 = one pass over the training split
    "time_limit_s": 0.0,            # stop after the first report past this many seconds of the run; 0 = none
    "monitor": "val_psnr",          # metric that picks the best checkpoint (and the plateau scheduler's)
    "grad_clip": 0.0,               # max grad norm; 0 disables
    "ema_decay": 0.0,               # EMA of generator weights (warmed up: decay ramps as (1+n)/(10+n)); 0 disables
    "amp": "auto",                  # auto | off | bf16 | fp16 (GPU only; auto = bf16 where supported)
    "gan_warmup_epochs": 0,         # PSNR-oriented generator epochs before adversarial training
    "d_lr_factor": 1.0,             # discriminator lr = generator lr * factor
    "val_max_images": 0,            # cap on validation images per epoch (0 = whole split)
    "num_workers_loader": 0,        # DataLoader worker processes per training worker
    "seed": 0,
    "init_from": "",                # a checkpoint whose weights, EMA and optimizer state start this run (its
                                    # schedule and counters start afresh): a search's refit phase
}

# non_lens: simulate non-lenses too (every 4th image; lens finding, e.g. for val_downstream_auc)
DATA_DEFAULTS: dict[str, Any] = {"path": None, "preset": "tiny", "count": 512, "seed": 0, "non_lens": False}

SECTIONS = ("data", "model", "discriminator", "normalization", "augment", "optimizer", "scheduler",
            "loss", "train")

_TYPES = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}


def _check_type(path: str, value: Any, default: Any, allow_none: bool = False) -> Any:
    if default is None or (value is None and allow_none):
        return value
    kind = type(default)
    if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return value
    raise UserError(f"{path}: expected {_TYPES.get(kind, kind.__name__)}, got {value!r}")


def _merge_section(name: str, given: Any, defaults: dict[str, Any], allow_none: bool = False) -> dict[str, Any]:
    given = {} if given is None else given
    expect(isinstance(given, dict), f"{name}: expected a mapping, got {given!r}")
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise UserError(f"{name}.{unknown[0]}: unknown key{did_you_mean(unknown[0], defaults)}; valid keys: "
                        f"{', '.join(sorted(defaults))}")
    return {key: _check_type(f"{name}.{key}", given[key], default, allow_none) if key in given else default
            for key, default in defaults.items()}


def resolve_run_config(cfg: dict[str, Any] | None) -> dict[str, Any]:
    """Return a copy of ``cfg`` with defaults filled and the ``train``/``data`` sections validated."""
    cfg = copy.deepcopy(cfg or {})
    expect(isinstance(cfg, dict), f"run configuration: expected a mapping, got {cfg!r}")
    unknown = sorted(set(cfg) - set(SECTIONS))
    if unknown:
        raise UserError(f"{unknown[0]}: unknown section{did_you_mean(unknown[0], SECTIONS)}; valid sections: "
                        f"{', '.join(SECTIONS)}")
    out = {s: cfg.get(s) for s in SECTIONS}
    out["train"] = _merge_section("train", cfg.get("train"), TRAIN_DEFAULTS)
    out["data"] = _merge_section("data", cfg.get("data"), DATA_DEFAULTS, allow_none=True)
    if out["data"]["path"] and "preset" not in (cfg.get("data") or {}):
        out["data"]["preset"] = None  # a missing explicit file is an error, not a cue to simulate into it
    train = out["train"]
    expect(train["epochs"] >= 1, f"train.epochs: expected >= 1, got {train['epochs']}")
    expect(train["batch_size"] >= 1, f"train.batch_size: expected >= 1, got {train['batch_size']}")
    expect(train["patch_size"] >= 0, f"train.patch_size: expected >= 0 (0 = whole images), got {train['patch_size']}")
    expect(train["steps_per_epoch"] >= 0,
           f"train.steps_per_epoch: expected >= 0 (0 = one pass over the data), got {train['steps_per_epoch']}")
    expect(train["time_limit_s"] >= 0, f"train.time_limit_s: expected >= 0 (0 = none), got {train['time_limit_s']}")
    expect(train["monitor"] in MONITORABLE,
           f"train.monitor: expected one of {', '.join(MONITORABLE)}, got {train['monitor']!r}")
    expect(train["amp"] in ("auto", "off", "bf16", "fp16"),
           f"train.amp: expected auto, off, bf16 or fp16, got {train['amp']!r}")
    expect(0.0 <= train["ema_decay"] < 1.0, f"train.ema_decay: expected in [0, 1), got {train['ema_decay']}")
    model = out["model"] or {"name": "rdn"}
    expect(isinstance(model, dict) and isinstance(model.get("name"), str),
           f"model: expected a mapping with a 'name', got {model!r}")
    out["model"] = model
    for section in ("normalization", "optimizer", "scheduler"):
        value = out[section]
        if isinstance(value, str):
            out[section] = {"name": value}
    out["normalization"] = out["normalization"] or {"name": "none"}
    out["optimizer"] = out["optimizer"] or {"name": "adam"}
    out["scheduler"] = out["scheduler"] or {"name": "none"}
    out["augment"] = out["augment"] or {}
    out["loss"] = out["loss"] or {}
    out["discriminator"] = out["discriminator"] or {}
    return out


def split_choice(section: dict[str, Any], where: str) -> tuple[str, dict[str, Any]]:
    """``{"name": X, **params}`` -> ``(X, params)``."""
    expect(isinstance(section, dict) and isinstance(section.get("name"), str),
           f"{where}: expected a mapping with a 'name', got {section!r}")
    params = {k: v for k, v in section.items() if k != "name"}
    return section["name"], params


def load_run_config(path: str | Path) -> dict[str, Any]:
    """Read a run-configuration YAML file; errors name the file."""
    return read_yaml(path, "run-configuration", resolve_run_config)
