"""Which downstream tasks a data file supports, and the images and targets each one uses.

* ``classify``: the substructure classes of the file (every class but ``non_lens``; at least two needed).
* ``find``: lens (any other class) vs ``non_lens``; only when the file has ``non_lens`` images.
* ``regress``: lens parameters of the lensed images (``non_lens`` rows excluded): ``theta_E`` (required)
  and the ellipticity and shear components ``e1``, ``e2``, ``gamma1``, ``gamma2`` that the file stores.

``--task all`` runs every task the file supports and says why it skipped the others; asking for one task
the file cannot support is a one-line :class:`~lensearch.errors.UserError`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lensearch.data.store import H5Info, iter_batches, open_h5
from lensearch.errors import UserError

__all__ = ["NON_LENS", "REGRESSION_TARGETS", "SPIN2_PAIRS", "TASKS", "LensData", "Task", "load_data", "plan_tasks"]

TASKS = ("classify", "find", "regress")
NON_LENS = "non_lens"
REGRESSION_TARGETS = ("theta_E", "e1", "e2", "gamma1", "gamma2")
# Spin-2 components (ellipticity, shear): under a 90-degree rotation both change sign, under a flip the
# second one does. Training augmentations transform these targets accordingly (see train.augment_batch).
SPIN2_PAIRS = (("e1", "e2"), ("gamma1", "gamma2"))


@dataclass
class Split:
    """One split of the file in memory: ``hr`` (N,1,H,W), ``lr`` (N,1,h,w), ``label`` (N,), ``params`` (N,K)."""

    hr: np.ndarray
    lr: np.ndarray
    label: np.ndarray
    params: np.ndarray

    def __len__(self) -> int:
        return int(self.label.size)


@dataclass
class LensData:
    info: H5Info
    splits: dict[str, Split]


def load_data(path: str | Path) -> LensData:
    """Validate ``path`` (one-line errors from :func:`open_h5`) and read its train, val and test splits."""
    info = open_h5(path)
    if not info.splits.get("train") or not info.splits.get("test"):
        raise UserError(f"{path}: downstream tasks need train and test images; splits are {info.splits}")
    splits = {}
    for name in ("train", "val", "test"):
        parts = list(iter_batches(info.path, name, 512, ("hr", "lr", "label", "params")))
        if not parts:
            continue
        splits[name] = Split(*(np.concatenate([p[k] for p in parts]) for k in ("hr", "lr", "label", "params")))
    return LensData(info, splits)


@dataclass
class Task:
    """One task: ``problem`` "classification" (``classes``) or "regression" (``targets``, columns of params).

    :meth:`select` gives a split's rows the task uses and their targets (class indices or a float matrix).
    """

    name: str
    problem: str                    # classification | regression
    title: str
    classes: list[str] = field(default_factory=list)
    targets: list[str] = field(default_factory=list)
    class_of_label: dict[int, int] = field(default_factory=dict)  # file label -> task class (classification)
    columns: list[int] = field(default_factory=list)               # params columns (regression)
    lensed_labels: list[int] = field(default_factory=list)         # file labels of lensed images (regression)

    @property
    def outputs(self) -> int:
        return len(self.classes) if self.problem == "classification" else len(self.targets)

    def select(self, split: Split) -> tuple[np.ndarray, np.ndarray]:
        """(row indices into the split, targets): int64 class indices or float32 (n, targets)."""
        if self.problem == "classification":
            rows = np.flatnonzero(np.isin(split.label, list(self.class_of_label)))
            return rows, np.array([self.class_of_label[int(v)] for v in split.label[rows]], dtype=np.int64)
        rows = np.flatnonzero(np.isin(split.label, self.lensed_labels))
        return rows, split.params[rows][:, self.columns].astype(np.float32)


def plan_tasks(info: H5Info, requested: str = "all") -> tuple[list[Task], list[str]]:
    """The tasks to run for ``--task requested`` (one of :data:`TASKS` or ``all``) and notes on skipped ones."""
    if requested not in (*TASKS, "all"):
        raise UserError(f"--task {requested}: expected one of {', '.join(TASKS)}, all")
    names = info.class_names
    lensed = [i for i, c in enumerate(names) if c != NON_LENS]
    has_non_lens = NON_LENS in names
    candidates: dict[str, Task | str] = {}

    if len(lensed) >= 2:
        candidates["classify"] = Task("classify", "classification", "substructure classification",
                                      classes=[names[i] for i in lensed],
                                      class_of_label={label: k for k, label in enumerate(lensed)})
    else:
        candidates["classify"] = (f"{info.path}: substructure classification needs at least two lensed classes, "
                                  f"the file has {[names[i] for i in lensed]} (class_names {names})")
    if has_non_lens and lensed:
        candidates["find"] = Task("find", "classification", "lens finding", classes=["lens", NON_LENS],
                                  class_of_label={i: (1 if c == NON_LENS else 0) for i, c in enumerate(names)})
    else:
        candidates["find"] = (f"{info.path}: lens finding needs '{NON_LENS}' images and lenses; the file's classes "
                              f"are {names} (simulate with --non-lens)")
    targets = [t for t in REGRESSION_TARGETS if t in info.param_names]
    if "theta_E" in targets and lensed:
        candidates["regress"] = Task("regress", "regression", "lens parameter regression", targets=targets,
                                     columns=[info.param_names.index(t) for t in targets], lensed_labels=lensed)
    else:
        candidates["regress"] = (f"{info.path}: lens parameter regression needs 'theta_E' in params and lensed "
                                 f"images; params are {info.param_names}")

    if requested != "all":
        chosen = candidates[requested]
        if isinstance(chosen, str):
            raise UserError(f"--task {requested}: {chosen}")
        return [chosen], []
    tasks = [t for t in candidates.values() if isinstance(t, Task)]
    notes = [f"skipped {name}: {why}" for name, why in candidates.items() if isinstance(why, str)]
    if not tasks:
        raise UserError(f"--task all: {info.path} supports no downstream task ({'; '.join(notes)})")
    return tasks, notes
