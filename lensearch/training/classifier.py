"""The small lensing CNNs every science task uses, and their plain, seeded PyTorch training (no Ray).

One implementation shared by ``lensearch downstream`` (:mod:`lensearch.downstream`, which re-exports it) and
the search's downstream objective (:mod:`lensearch.training.frozen_classifier`, the frozen classifier that
scores every trial's SR images).

**Networks.** :class:`~lensearch.models.feature_net.FeatureNet` for every task. The substructure classifier
*is* a FeatureNet, so its trained weights serve directly as the feature network of the SRGAN/ESRGAN content
loss (``loss.content_weights``). The lens finder uses the same architecture with two classes, the regressor
with one output per lens parameter (the linear head then predicts standardised targets; :class:`Standardizer`
maps them back). Inputs are seen the way the content loss sees images
(:func:`lensearch.training.losses.content_space`): each image scaled by its own range to [0, 1]
(:func:`unit_scale_images`). That also makes the networks independent of the file's flux units, and of any
overall flux bias an SR model may introduce.

**Training.** Adam, cross-entropy with inverse class frequency weights (classification) or MSE on
standardised targets (regression), random flips and 90-degree rotations, and the weights of the epoch with
the lowest validation loss (the last epoch when there is no validation split).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from lensearch.data.tasks import SPIN2_PAIRS, Task
from lensearch.models.feature_net import FeatureNet

__all__ = ["DEFAULT_NET", "Standardizer", "Trained", "augment_batch", "build_net", "predict", "train_task",
           "unit_scale_images"]

DEFAULT_NET = {"base_channels": 16, "num_stages": 3}


def build_net(outputs: int, base_channels: int = DEFAULT_NET["base_channels"],
              num_stages: int = DEFAULT_NET["num_stages"]) -> FeatureNet:
    """A single-channel FeatureNet with ``outputs`` logits (classes) or regression outputs."""
    return FeatureNet(in_channels=1, num_classes=outputs, base_channels=base_channels, num_stages=num_stages)


def unit_scale_images(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(N,1,H,W) images, each mapped so that its min is 0 and its max 1 (a constant image becomes 0)."""
    t = torch.as_tensor(np.asarray(x, dtype=np.float32)) if not isinstance(x, torch.Tensor) else x.float()
    lo = t.amin(dim=(1, 2, 3), keepdim=True)
    span = t.amax(dim=(1, 2, 3), keepdim=True) - lo
    return (t - lo) / torch.where(span > 0, span, torch.ones_like(span))


@dataclass
class Standardizer:
    """Per-column mean/std of regression targets (fitted on the training rows)."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, y: np.ndarray) -> Standardizer:
        y = np.asarray(y, dtype=np.float64)
        std = y.std(axis=0)
        return cls(y.mean(axis=0), np.where(std > 0, std, 1.0))

    def apply(self, y: np.ndarray) -> np.ndarray:
        return ((np.asarray(y, np.float64) - self.mean) / self.std).astype(np.float32)

    def invert(self, z: np.ndarray) -> np.ndarray:
        return np.asarray(z, np.float64) * self.std + self.mean


@dataclass
class Trained:
    """A trained network with what is needed to read its outputs back."""

    net: FeatureNet
    task: Task
    standardizer: Standardizer | None
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    seconds: float = 0.0


def _sign_flips(task: Task) -> tuple[np.ndarray, np.ndarray]:
    """Per target: the sign under a flip and under a 90-degree rotation (spin-2 components change sign)."""
    flip, rot = np.ones(len(task.targets)), np.ones(len(task.targets))
    for a, b in SPIN2_PAIRS:
        for name, under_flip in ((a, 1.0), (b, -1.0)):
            if name in task.targets:
                i = task.targets.index(name)
                flip[i], rot[i] = under_flip, -1.0
    return flip, rot


def augment_batch(x: torch.Tensor, y: torch.Tensor, task: Task, rng: np.random.Generator
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """One random flip/rotation of the whole batch; regression targets transformed to match.

    Classes, Einstein radii and shear/ellipticity *amplitudes* are invariant; a 90-degree rotation turns a
    position angle phi into phi + 90 deg, i.e. (e1, e2) -> (-e1, -e2), and a mirror flip turns phi into -phi
    (up to 180 deg), i.e. e2 -> -e2.
    """
    k, mirror = int(rng.integers(4)), bool(rng.integers(2))
    if k:
        x = torch.rot90(x, k, dims=(2, 3))
    if mirror:
        x = torch.flip(x, dims=(3,))
    if task.problem == "regression":
        flip, rot = _sign_flips(task)
        sign = (rot ** k) * (flip if mirror else 1.0)
        y = y * torch.as_tensor(sign, dtype=y.dtype)
    return x, y


def _loss_fn(task: Task, y_train: np.ndarray) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    if task.problem == "classification":
        counts = np.bincount(y_train, minlength=task.outputs).astype(np.float64)
        weight = torch.as_tensor(np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / task.outputs, 0.0),
                                 dtype=torch.float32)
        return lambda out, y: F.cross_entropy(out, y, weight=weight)
    return F.mse_loss


def train_task(task: Task, x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray | None = None,
               y_val: np.ndarray | None = None, *, epochs: int = 30, seed: int = 0, batch_size: int = 16,
               lr: float = 2e-3, net_config: dict[str, Any] | None = None,
               log: Callable[[str], None] | None = None) -> Trained:
    """Train a fresh network for ``task`` on images ``x_train`` (N,1,H,W, any units) and targets ``y_train``.

    Args:
        task: what to learn (classification: int class indices; regression: float (N, targets)).
        x_val, y_val: validation images/targets; the epoch with the lowest validation loss is kept.
        epochs, seed, batch_size, lr: the schedule (Adam with cosine decay); ``seed`` fixes init and order.
        net_config: FeatureNet size (``base_channels``, ``num_stages``).

    Returns:
        :class:`Trained` with the network in eval mode.
    """
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = build_net(task.outputs, **(net_config or {}))
    standardizer = Standardizer.fit(y_train) if task.problem == "regression" else None
    x = unit_scale_images(x_train)
    y = torch.as_tensor(y_train)
    has_val = x_val is not None and len(x_val) > 0
    xv = unit_scale_images(x_val) if has_val else None
    loss_fn = _loss_fn(task, np.asarray(y_train))

    def target(t: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(standardizer.apply(t.numpy())) if standardizer else t

    steps = max(1, epochs * int(np.ceil(len(x) / batch_size)))
    opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    out = Trained(net, task, standardizer)
    best_loss, best_state = float("inf"), None
    for epoch in range(1, epochs + 1):
        net.train()
        order = rng.permutation(len(x))
        total = 0.0
        for a in range(0, len(order), batch_size):
            idx = torch.as_tensor(order[a:a + batch_size])
            if len(idx) < 2:  # BatchNorm needs two images
                continue
            xb, yb = augment_batch(x[idx], y[idx], task, rng)
            loss = loss_fn(net(xb)[1], target(yb))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        row = {"epoch": epoch, "train_loss": total / len(x)}
        if has_val:
            net.eval()
            with torch.no_grad():
                row["val_loss"] = float(loss_fn(_forward(net, xv), target(torch.as_tensor(y_val))))
            if row["val_loss"] < best_loss:
                best_loss, best_state, out.best_epoch = row["val_loss"], copy.deepcopy(net.state_dict()), epoch
        out.history.append(row)
        if log and (epoch == epochs or epoch % max(1, epochs // 5) == 0):
            log(f"{task.name}: epoch {epoch}/{epochs} " + " ".join(f"{k} {v:.4f}" for k, v in row.items()
                                                                    if k != "epoch"))
    if best_state is not None:
        net.load_state_dict(best_state)
    else:
        out.best_epoch = epochs
    net.eval()
    out.seconds = time.perf_counter() - t0
    return out


@torch.no_grad()
def _forward(net: FeatureNet, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    return torch.cat([net(x[a:a + batch_size])[1] for a in range(0, len(x), batch_size)])


@torch.no_grad()
def predict(trained: Trained, images: np.ndarray) -> np.ndarray:
    """Class probabilities (N, classes) or regression predictions in the targets' units (N, targets)."""
    trained.net.eval()
    out = _forward(trained.net, unit_scale_images(images))
    if trained.task.problem == "classification":
        return torch.softmax(out, dim=1).numpy().astype(np.float64)
    return trained.standardizer.invert(out.numpy())
