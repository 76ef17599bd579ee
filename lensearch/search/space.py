"""The ``space`` block of a search file, compiled into an Optuna define-by-run function.

The block mirrors a run configuration (:mod:`lensearch.training.config`); at each leaf a value is either
fixed or a distribution, written as a one-key mapping::

    space:
      model:
        choice:                        # a conditional choice: each branch brings its own parameters
          rdn:      {num_features: {categorical: [16, 32]}, num_blocks: {int: [2, 6]}}
          srresnet: {num_blocks: {int: [2, 8]}, batch_norm: false}
      normalization: {choice: {none: {}, asinh: {softening: {logfloat: [0.01, 1.0]}}}}
      optimizer:     {choice: {adam: {lr: {logfloat: [1.0e-4, 3.0e-3]}}}}
      train:         {batch_size: {categorical: [8, 16]}}

Distributions: ``categorical: [..]``, ``int: [low, high]``, ``logint: [low, high]``, ``float: [low, high]``,
``logfloat: [low, high]`` (``step: s`` may accompany int/float). Anything else is a fixed value.

Parameter names are path-qualified: ``model`` (the chosen branch), ``model.rdn.num_blocks``,
``optimizer.adam.lr``. Parameters of branches not taken are never suggested, so they never appear in a
trial's configuration. :meth:`Space.materialize` turns a trial's flat parameters back into a run
configuration (``model: {name: rdn, num_blocks: 4, ...}``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from lensearch.errors import UserError, did_you_mean

DISTRIBUTIONS = ("categorical", "int", "logint", "float", "logfloat")
SPACE_SECTIONS = ("model", "discriminator", "normalization", "augment", "optimizer", "scheduler", "loss", "train")
CHOICE_SECTIONS = ("model", "normalization", "optimizer", "scheduler")


@dataclass(frozen=True)
class Fixed:
    value: Any


@dataclass(frozen=True)
class Dist:
    distribution: str               # categorical | int | logint | float | logfloat (a model's kind is ModelSpec.kind)
    args: tuple
    step: float | int | None = None

    def suggest(self, trial, name: str):
        if self.distribution == "categorical":
            return trial.suggest_categorical(name, list(self.args))
        low, high = self.args
        if self.distribution in ("int", "logint"):
            return trial.suggest_int(name, low, high, step=self.step or 1, log=self.distribution == "logint")
        return trial.suggest_float(name, low, high, step=self.step, log=self.distribution == "logfloat")

    def describe(self) -> str:
        if self.distribution == "categorical":
            return "one of " + ", ".join(map(str, self.args))
        step = f" step {self.step}" if self.step else ""
        return f"{self.distribution} [{self.args[0]}, {self.args[1]}]{step}"

    def representative(self):
        return self.args[0]


@dataclass(frozen=True)
class Section:
    items: dict[str, Any]


@dataclass(frozen=True)
class Choice:
    branches: dict[str, Section]


def _parse(raw: Any, path: str):
    if isinstance(raw, dict) and raw and set(raw) - {"step"} <= set(DISTRIBUTIONS) and len(set(raw) - {"step"}) == 1:
        return _parse_dist(raw, path)
    if isinstance(raw, dict) and "choice" in raw:
        if set(raw) != {"choice"}:
            extra = sorted(set(raw) - {"choice"})[0]
            raise UserError(f"{path}.{extra}: a choice takes only 'choice: {{branch: params}}'")
        branches = raw["choice"]
        if not isinstance(branches, dict) or not branches:
            raise UserError(f"{path}.choice: expected a non-empty mapping of branch name to parameters, "
                            f"got {branches!r}")
        out = {}
        for name, params in branches.items():
            params = {} if params is None else params
            if not isinstance(params, dict):
                raise UserError(f"{path}.choice.{name}: expected a mapping of parameters, got {params!r}")
            out[str(name)] = Section({k: _parse(v, f"{path}.{name}.{k}") for k, v in params.items()})
        return Choice(out)
    if isinstance(raw, dict):
        return Section({str(k): _parse(v, f"{path}.{k}") for k, v in raw.items()})
    return Fixed(raw)


def _parse_dist(raw: dict, path: str) -> Dist:
    distribution = next(k for k in raw if k != "step")
    args, step = raw[distribution], raw.get("step")
    if distribution == "categorical":
        if not isinstance(args, list) or not args:
            raise UserError(f"{path}.categorical: expected a non-empty list, got {args!r}")
        if len({repr(a) for a in args}) != len(args):
            raise UserError(f"{path}.categorical: values must be distinct, got {args!r}")
        if step is not None:
            raise UserError(f"{path}.step: categorical takes no step")
        if any(isinstance(a, (dict, list)) for a in args):
            raise UserError(f"{path}.categorical: values must be scalars (number, string, bool, null)")
        return Dist(distribution, tuple(args))
    ok = (isinstance(args, list) and len(args) == 2
          and all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args))
    if not ok:
        raise UserError(f"{path}.{distribution}: expected [low, high], got {args!r}")
    low, high = args
    if distribution in ("int", "logint") and not all(isinstance(a, int) for a in args):
        raise UserError(f"{path}.{distribution}: expected integer bounds, got {args!r}")
    if low > high:
        raise UserError(f"{path}.{distribution}: low {low} is above high {high}")
    if distribution.startswith("log") and low <= 0:
        raise UserError(f"{path}.{distribution}: log scale needs low > 0, got {low}")
    if step is not None and (distribution.startswith("log") or not isinstance(step, (int, float)) or step <= 0):
        raise UserError(f"{path}.step: expected a positive number on a linear int/float, got {step!r}")
    return Dist(distribution, (low, high), step)


class Space:
    """A compiled search space: ``suggest`` (Optuna define-by-run) and ``materialize`` (-> run config)."""

    def __init__(self, root: Section, base_dir: Path | None = None):
        self.root = root
        # Where relative file paths in the space (loss.content_weights) were validated: the driver's working
        # directory at compile time. Kept absolute, so trials (which Ray Tune runs in their own directories)
        # get absolute paths from materialize.
        self.base_dir = Path(base_dir or Path.cwd()).resolve()

    # -- Optuna -------------------------------------------------------------------------------------
    def suggest(self, trial) -> None:
        """The define-by-run function: suggests every active parameter on ``trial``."""
        for path, node in self.root.items.items():
            self._suggest(node, path, trial)

    def _suggest(self, node, path: str, trial) -> None:
        if isinstance(node, Dist):
            node.suggest(trial, path)
        elif isinstance(node, Choice):
            name = trial.suggest_categorical(path, list(node.branches))
            self._suggest(node.branches[name], f"{path}.{name}", trial)
        elif isinstance(node, Section):
            for key, child in node.items.items():
                self._suggest(child, f"{path}.{key}", trial)

    # -- configurations -----------------------------------------------------------------------------
    def materialize(self, params: dict[str, Any]) -> dict[str, Any]:
        """Flat trial parameters -> nested run configuration (fixed values filled in; a relative
        ``loss.content_weights`` made absolute against :attr:`base_dir`)."""
        from lensearch.training.losses import absolute_loss_paths

        config = {path: self._materialize(node, path, params) for path, node in self.root.items.items()}
        return absolute_loss_paths(config, self.base_dir)

    def _materialize(self, node, path: str, params: dict[str, Any]):
        if isinstance(node, Fixed):
            return node.value
        if isinstance(node, Dist):
            return params[path]
        if isinstance(node, Choice):
            name = params[path]
            return {"name": name, **self._materialize(node.branches[name], f"{path}.{name}", params)}
        return {k: self._materialize(child, f"{path}.{k}", params) for k, child in node.items.items()}

    def representatives(self, last: bool = False) -> Iterator[dict[str, Any]]:
        """One configuration per choice branch, to validate every branch up front: each distribution's first
        value (its low end), or with ``last`` its last (high end: the costliest sizes, for time estimates)."""
        choices = [(p, n) for p, n in self._walk(self.root, "") if isinstance(n, Choice)]
        base = self._first_params(self.root, "", last)
        yield self.materialize(base)
        for path, choice in choices:
            for name in list(choice.branches)[1:]:
                params = dict(base)
                params[path] = name
                params.update(self._first_params(choice.branches[name], f"{path}.{name}", last))
                # nested choices inside this branch take their first values
                yield self.materialize(params)

    def _first_params(self, node, path: str, last: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if isinstance(node, Dist):
            out[path] = node.args[-1] if last else node.representative()
        elif isinstance(node, Choice):
            first = next(iter(node.branches))
            out[path] = first
            out.update(self._first_params(node.branches[first], f"{path}.{first}", last))
        elif isinstance(node, Section):
            for key, child in node.items.items():
                out.update(self._first_params(child, f"{path}.{key}" if path else key, last))
        return out

    def _walk(self, node, path: str):
        yield path, node
        if isinstance(node, Choice):
            for name, branch in node.branches.items():
                yield from self._walk(branch, f"{path}.{name}")
        elif isinstance(node, Section):
            for key, child in node.items.items():
                yield from self._walk(child, f"{path}.{key}" if path else key)

    def check_point(self, point: dict[str, Any], where: str) -> None:
        """A user-given point (flat names -> values) must name searched parameters with values they allow,
        and give every parameter its branches make active."""
        params = {path: node for path, node in self._walk(self.root, "") if isinstance(node, (Dist, Choice))}
        for name, value in point.items():
            if name not in params:
                raise UserError(f"{where}.{name}: not a searched parameter; searched: {', '.join(params)}")
            node = params[name]
            allowed = list(node.branches) if isinstance(node, Choice) else (
                list(node.args) if node.distribution == "categorical" else None)
            if allowed is not None and value not in allowed:
                raise UserError(f"{where}.{name}: expected one of {', '.join(map(str, allowed))}, got {value!r}")
            if allowed is None and not (isinstance(value, (int, float)) and node.args[0] <= value <= node.args[1]):
                raise UserError(f"{where}.{name}: expected a number in [{node.args[0]}, {node.args[1]}], got {value!r}")
        try:
            self.materialize(point)
        except KeyError as err:
            raise UserError(f"{where}: missing {err.args[0]} (active for this point)") from None

    def describe(self) -> list[tuple[str, str, str]]:
        """Flattened rows ``(name, distribution or value, condition)`` for ``lensearch space show``."""
        rows: list[tuple[str, str, str]] = []

        def visit(node, path: str, cond: str):
            if isinstance(node, Dist):
                rows.append((path, node.describe(), cond))
            elif isinstance(node, Fixed):
                rows.append((path, f"fixed {node.value!r}", cond))
            elif isinstance(node, Choice):
                rows.append((path, "choice of " + ", ".join(node.branches), cond))
                for name, branch in node.branches.items():
                    visit(branch, f"{path}.{name}", f"{path}={name}")
            else:
                for key, child in node.items.items():
                    visit(child, f"{path}.{key}" if path else key, cond)

        visit(self.root, "", "")
        return rows


def compile_space(raw: Any) -> Space:
    """Parse and check the ``space`` block; component names and keys are checked against their registries."""
    if not isinstance(raw, dict) or not raw:
        raise UserError(f"space: expected a non-empty mapping of sections ({', '.join(SPACE_SECTIONS)}), got {raw!r}")
    items = {}
    for section, value in raw.items():
        if section not in SPACE_SECTIONS:
            raise UserError(f"space.{section}: unknown section{did_you_mean(section, SPACE_SECTIONS)}; valid sections: {', '.join(SPACE_SECTIONS)}")
        node = _parse(value, f"space.{section}")
        if isinstance(node, Choice) and section not in CHOICE_SECTIONS:
            raise UserError(f"space.{section}: a choice is only allowed in {', '.join(CHOICE_SECTIONS)}")
        if section in CHOICE_SECTIONS and not isinstance(node, Choice):
            if not (isinstance(node, Section) and isinstance(node.items.get("name"), (Fixed, Dist))):
                raise UserError(f"space.{section}: expected 'choice: {{...}}' or a mapping with 'name'")
        items[section] = node
    space = Space(Section(items))
    from lensearch.training.validate import check_run_config

    for config in space.representatives():
        try:
            check_run_config(config)
        except UserError as err:
            raise UserError(f"space: {err}") from None
    return space
