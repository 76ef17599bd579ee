"""Check a run configuration without training: every component section is validated by the component's own
builder or registry, so errors carry the component's key path (``model.rdn.num_blocks``, ``optimizer.lr``).
Cheap: builds no network. Used by ``lensearch train`` and by search-space compilation (every branch)."""

from __future__ import annotations

from typing import Any

from lensearch.data.transforms import build_augment, build_normalization
from lensearch.models import registry
from lensearch.training.config import resolve_run_config, split_choice
from lensearch.training.losses import build_generator_loss
from lensearch.training.optim import OPTIMIZERS, SCHEDULERS, validated
from lensearch.training.steps import STEPS

# Placeholder statistics so data-fitted normalizations can be checked before any data exists.
_PLACEHOLDER_STATS = {"mean": 0.0, "std": 1.0, "min": 0.0, "max": 1.0, "p0.1": 0.0, "p1": 0.0, "p50": 0.5,
                      "p99": 1.0, "p99.9": 1.0}


def check_run_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """Resolve defaults and validate every section; returns the resolved configuration."""
    cfg = resolve_run_config(cfg)
    name, params = split_choice(cfg["model"], "model")
    spec = registry.get(name)
    registry.resolve_params(name, params)
    build_normalization(cfg["normalization"], _PLACEHOLDER_STATS)
    build_augment(cfg["augment"])
    validated("optimizer", OPTIMIZERS, cfg["optimizer"])
    validated("scheduler", SCHEDULERS, cfg["scheduler"])
    STEPS[spec.kind].check(spec, cfg, build_generator_loss(cfg["loss"]))
    return cfg
