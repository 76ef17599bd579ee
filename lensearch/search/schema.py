"""The search-space file schema — the one place that defines what a ``search_spaces/*.yaml`` may contain.

A file has these top-level keys (all but ``space`` optional)::

    name: gan                                  # search name (default: the file's stem)
    data:      {path: ..., preset: tiny, count: 512, seed: 0, non_lens: false}  # non_lens: simulate non-lenses
    objective: {metric: val_psnr, mode: max}   # or a list of them (multi-objective)
    budget:    {num_samples: 16, max_epochs: 20, time_budget_s: null, trial_time_s: null, refit_share: 0,
                max_concurrent: null}                                # refit: see lensearch.search.refit
    early_stopping: {name: asha, grace_period: 1, reduction_factor: 2}  # asha | hyperband | median | none
    searcher:  {name: tpe, seed: 0, startup_trials: 4}              # tpe | random | cmaes | nsga2
    resources: {workers: 1, gpu: auto, cpus_per_worker: 1, gpus_per_worker: 1}
    downstream: {task: auto, epochs: 20, seed: 0}  # the frozen classifier of val_downstream_auc (below)
    space:     {...}                                               # see lensearch.search.space
    profiles:  {cpu: {budget: {...}, space: {model: ...}}, gpu: {...}}  # per-machine overrides (below)

**Early stopping vs learning-rate schedule.** The top-level ``early_stopping`` section is Ray Tune's trial
scheduler (which trials stop early); ``space.scheduler`` is the learning-rate schedule inside each trial. The
top level was called ``scheduler`` before; that spelling still loads (one deprecation line on stderr naming the
file and ``early_stopping``), and a file giving both is refused.

**Profiles** size one file for different machines. Each profile overrides sections key by key, one level
deep: ``profiles.cpu.budget.max_epochs`` replaces ``budget.max_epochs``, ``profiles.cpu.space.model`` replaces
the whole ``space.model``. ``lensearch tune`` picks ``gpu`` when the Ray cluster has a GPU and ``cpu``
otherwise (``--profile NAME`` chooses), and says which and why. Every profile is validated when the file is
read, so a mistake in the GPU profile shows on a CPU machine too.

**Downstream objective.** ``val_downstream_auc`` (mode max) is the macro one-vs-rest ROC-AUC of a frozen
classifier, trained once per data file on its HR training images, on each trial's SR validation images
(:mod:`lensearch.training.frozen_classifier`). The ``downstream`` section picks its task: ``find`` (lens vs
``non_lens``), ``classify`` (substructure classes) or ``auto`` (``find`` when the file has ``non_lens``
images, else ``classify``), and the classifier's ``epochs`` and ``seed``; it is read only when an objective
or ``train.monitor`` names ``val_downstream_auc``.

The sections are typed models (:class:`SearchDocument` and its parts, on :mod:`lensearch.typed`). Every error
names the file and the key path and says what was expected, e.g.
``search_spaces/gan.yaml: budget.num_samples: expected an integer >= 1, got 'ten'``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lensearch.errors import UserError, did_you_mean
from lensearch.training.config import DataSection
from lensearch.typed import Invalid, Typed, checked, integer, number, one_of, parse
from lensearch.yamlfile import read_yaml

# Metrics an objective may name: what every trial reports, on a scale shared by all trials.
OBJECTIVE_METRICS = {"val_psnr", "val_ssim", "val_mse", "val_psnr_clean", "val_ssim_clean",
                     "val_mse_clean", "val_downstream_auc", "params", "flops", "latency_ms"}
# Reported, but in each trial's own units: a loss is computed on images as that trial's normalization left
# them, with that trial's loss terms and weights (and for GANs / diffusion models another objective
# altogether), so it cannot rank trials against each other. Allowed only where nothing is compared: a
# one-trial budget (``lensearch train`` monitoring val_loss).
INCOMPARABLE_METRICS = {"val_loss", "train_loss"}


# ------------------------------------------------------------------------------------------------ sections
class Budget(Typed):
    """What a search may spend."""

    num_samples: integer(1) = 8
    max_epochs: integer(1) = 10
    time_budget_s: number(0, exclusive=True, none=True) = None
    max_concurrent: integer(1, none=True) = None
    # per-trial cap: a trial stops after its first report past this many seconds (sets train.time_limit_s)
    trial_time_s: number(0, exclusive=True, none=True) = None
    # share of time_budget_s kept for the refit: the best trials continue from their checkpoints with a
    # fresh annealed schedule (search/refit.py); 0 = no refit
    refit_share: number(0, 1, high_exclusive=True, text="expected a number in [0, 1)") = 0.0
    # a trial whose process dies (a killed worker, a lost node) is restarted this many times at most; it
    # continues from its last checkpoint (trials that raise, e.g. on a non-finite loss, are not retried)
    max_retries: integer(0) = 1


class EarlyStopping(Typed):
    """Ray Tune's trial scheduler: which trials stop early (not the learning-rate schedule, ``space.scheduler``)."""

    name: one_of("asha", "hyperband", "median", "none") = "asha"
    grace_period: integer(1) = 1
    reduction_factor: number(1, exclusive=True) = 2
    min_samples_required: integer(1) = 2


def _initial_points(value: Any) -> list[dict[str, Any]]:
    if not (isinstance(value, list) and all(isinstance(p, dict) for p in value)):
        raise Invalid("expected a list of mappings of parameter name to value")
    return value


class Searcher(Typed):
    """The Optuna sampler."""

    name: one_of("tpe", "random", "cmaes", "nsga2") = "tpe"
    seed: integer(0) = 0
    startup_trials: integer(0) = 4
    # Configurations to evaluate first (warm start, e.g. a published best): flat parameter names as in
    # `lensearch space show`, e.g. [{model: rdn, model.rdn.num_blocks: 4, optimizer.adam.lr: 1.0e-3}].
    initial_points: checked(_initial_points, list[dict[str, Any]]) = []


class Resources(Typed):
    """What one trial gets."""

    workers: integer(1) = 1
    gpu: one_of("auto", "on", "off", True, False) = "auto"
    cpus_per_worker: number(0, exclusive=True) = 1.0
    gpus_per_worker: number(0, exclusive=True) = 1.0


class Downstream(Typed):
    """The frozen classifier of ``val_downstream_auc``."""

    task: one_of("auto", "find", "classify") = "auto"
    epochs: integer(1) = 20
    seed: integer(0) = 0


def _simple_name(value: Any) -> str:
    if not isinstance(value, str) or not value.replace("-", "_").replace(".", "_").isidentifier():
        raise Invalid("expected a simple name (letters, digits, - _ .)")
    return value


class SearchDocument(Typed):
    """One search file as written (a profile applied): the typed sections; ``objective`` and ``space`` are read
    by :func:`_objectives` and :func:`lensearch.search.space.compile_space`."""

    unknown_noun = "top-level key"

    name: checked(_simple_name, str | None) = None    # default: the file's stem
    data: DataSection = DataSection()
    objective: Any = None
    budget: Budget = Budget()
    early_stopping: EarlyStopping = EarlyStopping()
    searcher: Searcher = Searcher()
    resources: Resources = Resources()
    downstream: Downstream = Downstream()
    space: Any = None
    profiles: Any = None


@dataclass(frozen=True)
class Objective:
    metric: str
    mode: str


@dataclass
class SearchFile:
    """A validated search-space file."""

    path: Path
    name: str
    data: dict[str, Any]
    objectives: list[Objective]
    budget: dict[str, Any]
    early_stopping: dict[str, Any]               # Ray Tune's trial scheduler (not the learning-rate schedule)
    searcher: dict[str, Any]
    resources: dict[str, Any]
    space: Any                                   # compiled lensearch.search.space.Space
    downstream: dict[str, Any] = field(default_factory=dict)  # settings of val_downstream_auc's classifier
    raw: dict[str, Any] = field(repr=False, default_factory=dict)
    profile: str | None = None                   # the profile applied (None: the file as written)

    @property
    def profiles(self) -> list[str]:
        """Names of the file's profiles."""
        return list((self.raw.get("profiles") or {}).keys())

    def with_profile(self, name: str | None) -> "SearchFile":
        """The file with profile ``name`` applied (``None``: as written)."""
        if name is not None and name not in self.profiles:
            raise UserError(f"{self.path}: --profile {name}: no such profile; the file has: "
                            f"{', '.join(self.profiles) or '(none)'}")
        try:
            return parse_search(self.raw, self.path, profile=name)
        except UserError as err:
            raise UserError(f"{self.path}: {err}") from None

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    @property
    def primary(self) -> Objective:
        return self.objectives[0]


def _objectives(raw: Any, num_samples: Any = None) -> list[Objective]:
    if raw is None:
        raw = {"metric": "val_psnr", "mode": "max"}
    items = raw if isinstance(raw, list) else [raw]
    if not items:
        raise UserError("objective: expected a mapping or a non-empty list, got []")
    out = []
    for i, item in enumerate(items):
        where = f"objective[{i}]" if isinstance(raw, list) else "objective"
        if not isinstance(item, dict) or set(item) - {"metric", "mode"}:
            raise UserError(f"{where}: expected a mapping with keys metric and mode, got {item!r}")
        metric, mode = item.get("metric"), item.get("mode", "max")
        if metric in INCOMPARABLE_METRICS and num_samples != 1:
            raise UserError(f"{where}.metric: {metric} cannot rank trials (each trial's loss is in its own "
                            f"normalization and loss terms); expected one of {', '.join(sorted(OBJECTIVE_METRICS))}, "
                            f"got {metric!r}")
        if metric not in OBJECTIVE_METRICS | INCOMPARABLE_METRICS:
            raise UserError(f"{where}.metric: expected one of {', '.join(sorted(OBJECTIVE_METRICS))}, got {metric!r}")
        if mode not in ("max", "min"):
            raise UserError(f"{where}.mode: expected max or min, got {mode!r}")
        out.append(Objective(metric, mode))
    if len({o.metric for o in out}) != len(out):
        raise UserError("objective: the same metric appears twice")
    return out


TOP_LEVEL = tuple(SearchDocument.model_fields)
PROFILE_SECTIONS = tuple(k for k in TOP_LEVEL if k not in ("name", "profiles"))
# Spellings still read, each with one deprecation line: old top-level (and profile) key -> new key.
RENAMED = {"scheduler": "early_stopping"}


def _rename_deprecated(raw: dict[str, Any], path: Path) -> dict[str, Any]:
    """``raw`` with deprecated keys (:data:`RENAMED`) under their new names, at the top level and in every
    profile; one line on stderr per file naming it and the new key. Both spellings at once is an error."""
    import sys

    seen: list[str] = []

    def rename(doc: dict[str, Any], where: str) -> dict[str, Any]:
        out = dict(doc)
        for old, new in RENAMED.items():
            if old not in out:
                continue
            if new in out:
                raise UserError(f"{where}{old}: a deprecated spelling of {new}, which is given too; keep only {new}")
            seen.append(old)
            out = {(new if k == old else k): v for k, v in out.items()}
        return out

    out = rename(raw, "")
    profiles = out.get("profiles")
    if isinstance(profiles, dict):
        out["profiles"] = {name: rename(body, f"profiles.{name}.") if isinstance(body, dict) else body
                           for name, body in profiles.items()}
    for old in dict.fromkeys(seen):
        print(f"lensearch: warning: {path}: '{old}:' is deprecated (it is the early-stopping rule, not the "
              f"learning-rate schedule); rename it to '{RENAMED[old]}:'", file=sys.stderr, flush=True)
    return out


def apply_profile(raw: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``raw`` with a profile's sections merged in key by key, one level deep (see the module docstring)."""
    out = {k: v for k, v in raw.items() if k != "profiles"}
    for section, value in overrides.items():
        base = out.get(section)
        if isinstance(value, dict) and isinstance(base, dict) and section != "objective":
            out[section] = {**base, **value}
        else:
            out[section] = value
    return out


def _check_profiles(raw: Any) -> dict[str, dict[str, Any]]:
    if raw is None:
        return {}
    if not isinstance(raw, dict) or not raw:
        raise UserError(f"profiles: expected a mapping of profile name to overrides, got {raw!r}")
    for name, body in raw.items():
        if not isinstance(body, dict):
            raise UserError(f"profiles.{name}: expected a mapping of sections, got {body!r}")
        for section in body:
            if section not in PROFILE_SECTIONS:
                raise UserError(f"profiles.{name}.{section}: unknown section{did_you_mean(section, PROFILE_SECTIONS)}; valid: {', '.join(PROFILE_SECTIONS)}")
    return raw


def parse_search(raw: Any, path: Path, profile: str | None = None) -> SearchFile:
    """Validate a loaded YAML document (with ``profile`` applied); errors are prefixed by the caller with the
    file name. Every profile is validated too, whichever is applied."""
    if not isinstance(raw, dict):
        raise UserError(f"expected a mapping at the top level, got {type(raw).__name__}")
    unknown = [k for k in raw if k not in TOP_LEVEL and k not in RENAMED]
    if unknown:
        # the deprecated spellings still load, so they may be suggested too
        raise UserError(f"{unknown[0]}: unknown top-level key{did_you_mean(unknown[0], TOP_LEVEL + tuple(RENAMED))}; "
                        f"valid keys: {', '.join(TOP_LEVEL)}")
    raw = _rename_deprecated(raw, path)
    profiles = _check_profiles(raw.get("profiles"))
    for name, body in profiles.items():
        if name != profile:
            try:
                _parse_document(apply_profile(raw, body), path)
            except UserError as err:
                raise UserError(f"profiles.{name}: {err}") from None
    doc = apply_profile(raw, profiles[profile]) if profile is not None else raw
    try:
        out = _parse_document(doc, path)
    except UserError as err:
        raise UserError(f"profiles.{profile}: {err}" if profile is not None else str(err)) from None
    out.raw, out.profile = raw, profile
    return out


def _parse_document(raw: dict[str, Any], path: Path) -> SearchFile:
    from lensearch.search.space import compile_space

    if "space" not in raw:
        raise UserError("space: missing (the parameters to search)")
    # a section left empty (``budget:``) takes its defaults
    doc = parse(SearchDocument, {k: v for k, v in raw.items() if v is not None})
    objectives = _objectives(raw.get("objective"), doc.budget.num_samples)
    if len(objectives) > 1 and doc.searcher.name == "cmaes":
        raise UserError("searcher.name: cmaes supports one objective only; use tpe, nsga2 or random")
    space = compile_space(raw["space"])
    for i, point in enumerate(doc.searcher.initial_points):
        space.check_point(point, f"searcher.initial_points[{i}]")
    return SearchFile(
        path=path, name=doc.name or path.stem, data=doc.data.resolved().to_dict(), objectives=objectives,
        budget=doc.budget.to_dict(), early_stopping=doc.early_stopping.to_dict(), searcher=doc.searcher.to_dict(),
        resources=doc.resources.to_dict(), space=space, raw=raw, downstream=doc.downstream.to_dict(),
    )


def load_search(path: str | Path) -> SearchFile:
    """Read and validate a search-space file. Every error names the file."""
    return read_yaml(path, "search-space", lambda raw: parse_search(raw, Path(path)))
