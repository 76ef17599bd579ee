"""The model registry: one name -> :class:`ModelSpec` table for every super-resolution architecture.

Each architecture module registers its own spec(s) at import (``register(ModelSpec(...))``);
``lensearch/models/__init__.py`` imports them all. Hyperparameters are typed, documented :class:`Param`
objects, so search spaces, the CLI and YAML validation all read the same description; a tuple of them becomes a
typed model of the shared layer (:func:`params_model`, a :class:`lensearch.typed.Params`), which validates.

Discriminators for GAN models live in a second registry of the same shape (:data:`DISCRIMINATORS`).
"""

from __future__ import annotations

import functools
import numbers
from dataclasses import dataclass
from typing import Any, Callable

import torch
from pydantic import create_model

from lensearch.errors import UserError
from lensearch.typed import Invalid, Params, checked, parse

KINDS = ("interp", "pixel", "gan", "diffusion")  # model kinds; discriminators have kind "discriminator"
_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


@dataclass(frozen=True)
class Param:
    """One typed, documented hyperparameter. ``low``/``high`` bound numbers (inclusive)."""

    name: str
    type: type  # int | float | bool | str
    default: object
    help: str
    choices: tuple | None = None
    low: float | None = None
    high: float | None = None

    def describe(self) -> str:
        """What a valid value looks like, e.g. ``int in [1, 64]`` or ``one of 'linear', 'cosine'``."""
        if self.choices is not None:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        text = self.type.__name__
        if self.low is not None or self.high is not None:
            lo = "-inf" if self.low is None else f"{self.low:g}"
            hi = "inf" if self.high is None else f"{self.high:g}"
            text += f" in [{lo}, {hi}]"
        return text

    def coerce(self, value: Any, where: str) -> Any:
        """``value`` converted to :attr:`type` and validated; :class:`UserError` naming ``where`` otherwise."""
        try:
            return self.check(value)
        except Invalid as err:
            raise UserError(f"{where}: {err.problem}, got {value!r}") from None

    def check(self, value: Any) -> Any:
        """``value`` converted to :attr:`type` and validated (:class:`~lensearch.typed.Invalid` otherwise): the
        field type of this parameter in :func:`params_model`.

        Accepts the obvious spellings a YAML file, CLI string or Optuna trial produces: ``"3"`` / ``3.0``
        for an int, ``"true"`` for a bool, any real number for a float; never a bool for a number.
        """
        out = _convert(self.type, value)
        ok = out is not None
        if ok and self.choices is not None:
            ok = out in self.choices
        if ok and self.low is not None:
            ok = out >= self.low
        if ok and self.high is not None:
            ok = out <= self.high
        if not ok:
            raise Invalid(f"expected {self.describe()}")
        return out


def _convert(kind: type, value: Any) -> Any:
    """``value`` as ``kind``, or None when it cannot be read as one."""
    if type(value).__module__ == "numpy":  # numpy scalars, e.g. from a sampler
        value = value.item()
    if kind is bool:
        if isinstance(value, (bool, numbers.Integral)) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
            return value.strip().lower() in _TRUE
        return None
    if isinstance(value, bool):
        return None
    if kind is int:
        if isinstance(value, str):
            value = value.strip()
            return int(value) if value.lstrip("+-").isdigit() else None
        if isinstance(value, numbers.Integral):
            return int(value)
        if isinstance(value, numbers.Real) and float(value).is_integer():
            return int(value)
        return None
    if kind is float:
        try:
            return float(value) if isinstance(value, (numbers.Real, str)) else None
        except ValueError:
            return None
    if kind is str:
        return value if isinstance(value, str) else None
    raise TypeError(f"unsupported Param type {kind!r}")


@functools.lru_cache(maxsize=None)
def params_model(params: tuple[Param, ...]) -> type[Params]:
    """The typed model of ``params``: one field per :class:`Param` (its default; checked by :meth:`Param.check`).
    Built once per tuple."""
    fields = {p.name: (checked(p.check, p.type), p.default) for p in params}
    return create_model("Params_" + "_".join(p.name for p in params), __base__=Params, **fields)


def coerce_params(params: tuple[Param, ...], values: dict[str, Any], where: str) -> dict[str, Any]:
    """All ``params`` with defaults filled and ``values`` validated; ``where`` prefixes error key paths.

    An unknown key raises :class:`UserError` ``"<where>.<key>: unknown parameter ...; valid: ..."``.
    """
    return parse(params_model(params), values, where).to_dict()


@dataclass(frozen=True)
class ModelSpec:
    """How to build one architecture and what its hyperparameters are.

    ``build(scale=2, in_channels=1, **hparams)`` for models; ``build(in_channels=1, **hparams)`` for
    discriminators (kind ``"discriminator"``). ``export_notes`` is empty when TorchScript tracing and ONNX
    export (dynamic H/W) both work; otherwise it says what does not and why.
    """

    name: str
    kind: str
    build: Callable[..., torch.nn.Module]
    params: tuple[Param, ...]
    summary: str
    discriminator: str | None = None
    export_notes: str = ""
    # What inputs the network accepts (spandrel-style capabilities, for export and upscale to ask): the
    # smallest LR side and the multiple LR sides must be (every architecture here pads internally, so 1),
    # and the precisions it runs in.
    min_side: int = 2
    size_multiple: int = 1
    precisions: tuple[str, ...] = ("fp32", "bf16", "fp16")


class Registry:
    """A name -> :class:`ModelSpec` table; ``what`` ("model" / "discriminator") prefixes error key paths."""

    def __init__(self, what: str, kinds: tuple[str, ...]):
        self.what, self.kinds = what, kinds
        self._specs: dict[str, ModelSpec] = {}

    def register(self, spec: ModelSpec) -> ModelSpec:
        if spec.name in self._specs:
            raise ValueError(f"{self.what} {spec.name!r} registered twice")
        if spec.kind not in self.kinds:
            raise ValueError(f"{spec.name}: kind {spec.kind!r} not in {self.kinds}")
        if (spec.kind == "gan") != (spec.discriminator is not None):
            raise ValueError(f"{spec.name}: a discriminator goes with kind 'gan' and only with it")
        for p in spec.params:  # a bad default is a bug in the spec, caught at import
            p.coerce(p.default, f"{self.what}.{spec.name}.{p.name} (default)")
        self._specs[spec.name] = spec
        return spec

    def get(self, name: str) -> ModelSpec:
        if name not in self._specs:
            raise UserError(f"{self.what}: unknown {self.what} {name!r}; valid: {', '.join(self.names())}")
        return self._specs[name]

    def names(self) -> list[str]:
        return sorted(self._specs)

    def resolve_params(self, name: str, hparams: dict[str, Any]) -> dict[str, Any]:
        return coerce_params(self.get(name).params, dict(hparams), f"{self.what}.{name}")

    def build(self, name: str, hparams: dict[str, Any], **fixed: Any) -> torch.nn.Module:
        return self.get(name).build(**fixed, **self.resolve_params(name, hparams))


MODELS = Registry("model", KINDS)
DISCRIMINATORS = Registry("discriminator", ("discriminator",))


def register(spec: ModelSpec) -> ModelSpec:
    """Add a super-resolution model; called by each architecture module at import."""
    return MODELS.register(spec)


def get(name: str) -> ModelSpec:
    """The spec of model ``name``; :class:`UserError` listing the valid names if unknown."""
    return MODELS.get(name)


def names() -> list[str]:
    """Registered model names, sorted."""
    return MODELS.names()


def resolve_params(name: str, hparams: dict[str, Any]) -> dict[str, Any]:
    """``hparams`` with defaults filled and types coerced/validated (errors name ``model.<name>.<key>``)."""
    return MODELS.resolve_params(name, hparams)


def build(name: str, *, scale: int = 2, in_channels: int = 1, **hparams: Any) -> torch.nn.Module:
    """A fresh model ``name`` for ``scale``x upsampling of ``in_channels``-channel images."""
    return MODELS.build(name, hparams, scale=scale, in_channels=in_channels)


def register_discriminator(spec: ModelSpec) -> ModelSpec:
    """Add a discriminator (kind ``"discriminator"``)."""
    return DISCRIMINATORS.register(spec)


def get_discriminator(name: str) -> ModelSpec:
    return DISCRIMINATORS.get(name)


def discriminator_names() -> list[str]:
    return DISCRIMINATORS.names()


def resolve_discriminator_params(name: str, hparams: dict[str, Any]) -> dict[str, Any]:
    return DISCRIMINATORS.resolve_params(name, hparams)


def build_discriminator(name: str, in_channels: int = 1, **hparams: Any) -> torch.nn.Module:
    """A fresh discriminator returning one logit per image, shape (N,), for any patch size."""
    return DISCRIMINATORS.build(name, hparams, in_channels=in_channels)
