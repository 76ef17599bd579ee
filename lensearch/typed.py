"""The typed layer: every section a user writes (a search file, a run configuration, a component's parameters,
the simulator's switches) is a pydantic model built from the pieces here, and every mistake in one becomes the
same one-line :class:`~lensearch.errors.UserError`::

    budget.num_samples: expected an integer >= 1, got 'ten'
    train.epoch: unknown key (did you mean 'epochs'?); valid keys: epochs, batch_size, ...
    scheduler.max_lr: unknown parameter for onecycle; valid: pct_start

A model subclasses :class:`Typed` (``extra="forbid"``: an unknown key is an error) and declares its fields with
the checked types below (:func:`integer`, :func:`number`, :func:`boolean`, :func:`one_of`, :func:`string`, or
:func:`checked` around any function raising :class:`Invalid`), each of which says what it expected in the
words the message uses. :func:`parse` validates a mapping against a model; :func:`user_error` is the one place
that turns a pydantic ``ValidationError`` into lensearch's message (key path, expected, got). Cross-field rules
(``zscore`` needs statistics, ``cmaes`` takes one objective) stay plain code after parsing, raising
:class:`UserError` themselves.

Shared by every layer (data, models, training, search), so it imports nothing from them.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, PlainValidator, ValidationError
from pydantic_core import PydanticCustomError

from lensearch.errors import UserError, did_you_mean

__all__ = ["Invalid", "Params", "Typed", "boolean", "checked", "integer", "key_path", "number", "one_of", "parse",
           "string", "user_error"]

M = TypeVar("M", bound="Typed")
_ERROR = "lensearch"  # the pydantic error type of every checked field


class Invalid(ValueError):
    """Raised by a field check: ``problem`` is what was expected (``"expected a positive number"``); the
    message adds ``, got <value>`` unless ``got`` is false (the problem already shows the value)."""

    def __init__(self, problem: str, got: bool = True):
        super().__init__(problem)
        self.problem, self.got = problem, got


class Typed(BaseModel):
    """Base of every typed section: unknown keys are refused, values are checked by their field types, defaults
    are trusted (not re-validated). How an unknown key is reported is set per class by :attr:`unknown_noun`
    and :attr:`valid_label`."""

    model_config = ConfigDict(extra="forbid", validate_default=False, arbitrary_types_allowed=True)

    unknown_noun: ClassVar[str] = "key"          # "<path>: unknown key ..."
    valid_label: ClassVar[str] = "valid keys"    # "...; valid keys: a, b"

    @classmethod
    def keys(cls) -> list[str]:
        """The section's keys, in declaration order."""
        return list(cls.model_fields)

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """Every key with its default value."""
        return {name: f.get_default(call_default_factory=True) for name, f in cls.model_fields.items()}

    def to_dict(self) -> dict[str, Any]:
        """The section as a plain mapping (JSON/YAML-friendly: what checkpoints, MLflow and Ray carry)."""
        return self.model_dump()


class Params(Typed):
    """A component's parameters (a model's, an optimizer's, a loss's): ``unknown parameter ...; valid: ...``."""

    unknown_noun: ClassVar[str] = "parameter"
    valid_label: ClassVar[str] = "valid"


# ------------------------------------------------------------------------------------------------ field types
def checked(check: Callable[[Any], Any], annotation: Any = Any) -> Any:
    """A field type validated by ``check(value) -> value`` alone (it raises :class:`Invalid` on a bad value);
    ``annotation`` is the type it stands for (documentation, JSON schema)."""

    def validate(value: Any) -> Any:
        try:
            return check(value)
        except Invalid as err:
            raise PydanticCustomError(_ERROR, "{problem}", {"problem": err.problem, "got": err.got}) from None

    return Annotated[annotation, PlainValidator(validate)]


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _bound(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    if low is not None and high is not None:
        return f" in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if low is not None:
        return f" {'>' if low_open else '>='} {low:g}"
    if high is not None:
        return f" {'<' if high_open else '<='} {high:g}"
    return ""


def _in_range(v: float, low: float | None, high: float | None, low_open: bool, high_open: bool) -> bool:
    return ((low is None or (v > low if low_open else v >= low))
            and (high is None or (v < high if high_open else v <= high)))


def integer(low: int | None = None, high: int | None = None, *, none: bool = False, text: str | None = None,
            range_text: str | None = None) -> Any:
    """An integer (never a bool) in ``[low, high]``, or null with ``none``. The message is
    ``expected an integer >= low`` (``text`` replaces it); with ``range_text`` a value of the right type but out
    of range says that instead (e.g. ``expected >= 0 (0 = whole images)``)."""
    text = text or f"expected an integer{_bound(low, high, False, False)}{' or null' if none else ''}"

    def check(v: Any) -> int | None:
        if v is None and none:
            return None
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            raise Invalid(text)
        if not _in_range(v, low, high, False, False):
            raise Invalid(range_text or text)
        return int(v)

    return checked(check, int | None if none else int)


def number(low: float | None = None, high: float | None = None, *, exclusive: bool = False,
           high_exclusive: bool = False, none: bool = False, finite: bool = False, integral: bool = False,
           text: str | None = None, range_text: str | None = None) -> Any:
    """A real number (an int is read as a float unless ``integral``) in ``[low, high]`` (``exclusive`` opens the
    low end, ``high_exclusive`` the high one), or null with ``none``; ``finite`` refuses inf and nan, ``integral``
    keeps whole numbers as ints. Messages as for :func:`integer`: ``expected a number > 0`` by default."""
    text = text or f"expected a number{_bound(low, high, exclusive, high_exclusive)}{' or null' if none else ''}"

    def check(v: Any) -> float | int | None:
        if v is None and none:
            return None
        if not _is_number(v) or (finite and not math.isfinite(v)):
            raise Invalid(text)
        if not _in_range(v, low, high, exclusive, high_exclusive) or (integral and not float(v).is_integer()):
            raise Invalid(range_text or text)
        return int(v) if integral else float(v)

    return checked(check, int if integral else float)


def boolean(text: str = "expected true or false") -> Any:
    """``true`` or ``false`` (never 0/1 or a string)."""

    def check(v: Any) -> bool:
        if not isinstance(v, bool):
            raise Invalid(text)
        return v

    return checked(check, bool)


def one_of(*values: Any, text: str | None = None) -> Any:
    """One of ``values`` (compared with ``==``, a bool never matching a number); the matching value of
    ``values`` is kept (``2.0`` given for ``2`` reads as ``2``)."""
    text = text or f"expected one of {', '.join(map(str, values))}"

    def check(v: Any) -> Any:
        for c in values:
            if v == c and isinstance(v, bool) == isinstance(c, bool):
                return c
        raise Invalid(text)

    return checked(check)


def string(*, none: bool = False, text: str | None = None) -> Any:
    """A string, or null with ``none``."""
    text = text or ("expected a string or null" if none else "expected a string")

    def check(v: Any) -> str | None:
        if (v is None and none) or isinstance(v, str):
            return v
        raise Invalid(text)

    return checked(check, str | None if none else str)


# ------------------------------------------------------------------------------------------------ errors
def key_path(where: str, loc: Sequence[Any]) -> str:
    """``where`` followed by a pydantic location: ``("initial_points", 0)`` -> ``where.initial_points[0]``."""
    out = where
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out = f"{out}.{part}" if out else str(part)
    return out


def _model_at(model: type[BaseModel] | None, loc: Sequence[Any]) -> type[BaseModel] | None:
    """The model class that holds the key at ``loc`` (walking nested model fields), when there is one."""
    for part in loc:
        if model is None or not isinstance(part, str) or part not in model.model_fields:
            return None
        annotation = model.model_fields[part].annotation
        model = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
    return model


def unknown_key(path: str, key: str, valid: Sequence[str], *, noun: str = "key", label: str = "valid keys",
                owner: str | None = None) -> UserError:
    """``<path>: unknown <noun>[ for <owner>][ (did you mean 'x'?)]; <label>: a, b`` (``(none)`` when empty)."""
    return UserError(f"{path}: unknown {noun}{f' for {owner}' if owner else ''}{did_you_mean(key, valid)}; "
                     f"{label}: {', '.join(valid) or '(none)'}")


def user_error(err: ValidationError, model: type[BaseModel] | None = None, where: str = "",
               owner: str | None = None) -> UserError:
    """The one-line :class:`UserError` of ``err`` (its first error), raised while validating ``model`` at key
    path ``where``: ``<where>.<key>: expected ..., got <value>`` or ``<where>.<key>: unknown key ...``.
    ``owner`` names the component in unknown-key messages (``unknown parameter for onecycle``)."""
    first = err.errors(include_url=False)[0]
    loc, kind, value = first["loc"], first["type"], first.get("input")
    path = key_path(where, loc)
    if kind == "extra_forbidden":
        holder = _model_at(model, loc[:-1])
        valid = list(holder.model_fields) if holder is not None else []
        noun = getattr(holder, "unknown_noun", "key")
        label = getattr(holder, "valid_label", "valid keys")
        return unknown_key(path, str(loc[-1]), valid, noun=noun, label=label, owner=owner if len(loc) == 1 else None)
    if kind == _ERROR:
        ctx = first.get("ctx") or {}
        return UserError(f"{path}: {ctx.get('problem', first['msg'])}" + (f", got {value!r}" if ctx.get("got", True)
                                                                           else ""))
    if kind == "missing":
        return UserError(f"{path}: missing")
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return UserError(f"{path}: expected a mapping, got {value!r}")
    message = first["msg"]
    return UserError(f"{path}: expected {message[:1].lower()}{message[1:]}, got {value!r}")


def parse(model: type[M], data: Any, where: str = "", *, owner: str | None = None) -> M:
    """``data`` (a mapping, or None for all defaults) validated as ``model``; every mistake is a one-line
    :class:`UserError` naming ``where`` and the key (see :func:`user_error`)."""
    if data is None:
        data = {}
    if isinstance(data, model):
        return data
    if not isinstance(data, Mapping):
        raise UserError(f"{where or 'configuration'}: expected a mapping, got {data!r}")
    try:
        return model.model_validate(dict(data))
    except ValidationError as err:
        raise user_error(err, model, where, owner) from None
