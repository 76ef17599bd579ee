"""The report's figures (matplotlib, Agg backend: no display needed). Each function writes one PNG and returns
its path; none computes anything the report does not also state in a table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["compute_curve", "effect_plot", "importance_bars", "image_panel", "learning_curves", "pareto_plot",
           "power_spectra", "radial_profiles", "trial_lengths"]

DPI = 100
_STATE_COLORS = {"completed": "tab:green", "stopped early": "tab:orange", "errored": "tab:red",
                 "cut by time budget": "tab:purple", "hit its time limit": "tab:olive", "refit": "tab:blue",
                 "interrupted": "tab:gray"}


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    _plt().close(fig)
    return path


def state_kind(state: str) -> str:
    """The kind of an end state (``stopped early at epoch 2`` -> ``stopped early``)."""
    for kind in _STATE_COLORS:
        if state.startswith(kind) or state.startswith(kind.split()[0] + " of"):
            return kind
    return state.split(":")[0]


def _reference_lines(ax, reference: dict[str, float], metric: str, ceiling: bool = True) -> None:
    key = metric.replace("val_", "")
    for who, style in (("bicubic", ":"), ("noise_ceiling", "--"))[: 2 if ceiling else 1]:
        value = reference.get(f"{who}_val_{key}")
        if value is not None:
            ax.axhline(value, color="k", ls=style, lw=1, label=who.replace("_", " "))


def learning_curves(trials: list, metric: str, reference: dict[str, float], path: Path,
                    x: str = "epoch") -> Path:
    """``metric`` per report for each trial in ``trials`` (x: ``epoch`` or ``steps``), bicubic and the ceiling."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for t in trials:
        series = t.history.get(metric, [])
        if not series:
            continue
        if x == "steps" and t.history.get("steps"):
            steps = dict(t.history["steps"])
            xs = [steps.get(s, np.nan) for s, _ in series]
        else:
            xs = [s for s, _ in series]
        ax.plot(xs, [v for _, v in series], marker="o", ms=3, label=f"{t.trial_id} ({t.model})")
    _reference_lines(ax, reference, metric)
    ax.set_xlabel("optimizer steps" if x == "steps" else "epoch (report)")
    ax.set_ylabel(metric)
    ax.legend(fontsize=7, loc="best")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def trial_lengths(trials: list, max_epochs: int | None, metric: str, path: Path) -> Path:
    """Where early stopping cut trials: each trial's curve of ``metric``, its end marked by its end state."""
    plt = _plt()
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 4.2), gridspec_kw={"width_ratios": [3, 2]})
    for t in trials:
        series = t.history.get(metric, [])
        if not series:
            continue
        color = _STATE_COLORS.get(state_kind(t.state), "k")
        ax.plot([s for s, _ in series], [v for _, v in series], color=color, alpha=0.6, lw=1)
        ax.plot(series[-1][0], series[-1][1], marker="x" if state_kind(t.state) != "completed" else "o",
                color=color, ms=7)
    if max_epochs:
        ax.axvline(max_epochs, color="k", ls="--", lw=1, label=f"budget: {max_epochs} epochs")
    for kind, color in _STATE_COLORS.items():
        if any(state_kind(t.state) == kind for t in trials):
            ax.plot([], [], color=color, label=kind)
    ax.set_xlabel("epoch (report)")
    ax.set_ylabel(metric)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    from matplotlib.ticker import MaxNLocator

    for axis in (ax.xaxis, bx.xaxis, bx.yaxis):
        axis.set_major_locator(MaxNLocator(integer=True))
    ends = [t.epochs for t in trials]
    bins = np.arange(0.5, max(ends + [max_epochs or 1]) + 1.5)
    bx.hist(ends, bins=bins, color="tab:gray", edgecolor="k")
    bx.set_xlabel("epochs reached")
    bx.set_ylabel("trials")
    return _save(fig, path)


def compute_curve(points: list[tuple[float, float]], metric: str, reference: dict[str, float],
                  path: Path) -> Path:
    """Best ``metric`` so far against the cumulative training seconds spent (``points``: (seconds, best))."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4))
    xs, ys = zip(*points) if points else ((), ())
    ax.step(xs, ys, where="post", marker="o", ms=4, color="tab:blue", label="best so far")
    _reference_lines(ax, reference, metric)
    ax.set_xlabel("cumulative training seconds (all trials, in start order)")
    ax.set_ylabel(f"best {metric}")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def importance_bars(result: dict[str, dict[str, float]], path: Path) -> Path:
    """One horizontal bar chart per evaluator."""
    plt = _plt()
    names = [k for k in result if k != "skipped"]
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 0.4 * max(len(result[n]) for n in names) + 1.5),
                             squeeze=False)
    for ax, name in zip(axes[0], names):
        items = list(result[name].items())[::-1]
        ax.barh([k for k, _ in items], [v for _, v in items], color="tab:blue")
        ax.set_title(name)
        ax.set_xlabel("importance (sums to 1)")
        ax.tick_params(axis="y", labelsize=7)
    return _save(fig, path)


def effect_plot(effect, metric: str, reference: dict[str, float], path: Path, log_x: bool = False) -> Path:
    """A categorical effect as means with 95 % CIs (and every trial), a numeric one as a scatter."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    if effect.values == "categorical":
        summary = effect.summary()
        cats = list(effect.groups)
        for i, cat in enumerate(cats):
            ys = effect.groups[cat]
            ax.scatter(np.full(len(ys), i) + np.linspace(-0.12, 0.12, len(ys)), ys, s=12, color="tab:gray", zorder=2)
            mean, lo, hi, _ = summary[cat]
            err = None if not np.isfinite(lo) else [[mean - lo], [hi - mean]]
            ax.errorbar(i + 0.2, mean, yerr=err, fmt="D", color="tab:red", capsize=4, zorder=3)
        ax.set_xticks(range(len(cats)), [f"{c}\n(n={len(effect.groups[c])})" for c in cats], fontsize=7)
    else:
        xs, ys = zip(*effect.points)
        ax.scatter(xs, ys, s=14, color="tab:blue")
        if log_x:
            ax.set_xscale("log")
    _reference_lines(ax, reference, metric, ceiling=False)  # the ceiling would flatten the differences shown
    ax.set_title(effect.param, fontsize=9)
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def pareto_plot(points: list[tuple[str, float, float, bool]], names: tuple[str, str], path: Path) -> Path:
    """``points``: (trial, objective 1, objective 2, on the front); the front drawn as a step line."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4.2))
    off = [(a, b) for _, a, b, f in points if not f]
    on = sorted((a, b) for _, a, b, f in points if f)
    if off:
        ax.scatter(*zip(*off), color="tab:gray", s=18, label="dominated or not comparable")
    if on:
        ax.plot(*zip(*on), marker="o", color="tab:red", label="Pareto front")
    for tid, a, b, f in points:
        ax.annotate(tid, (a, b), fontsize=6, alpha=0.7)
    ax.set_xlabel(names[0])
    ax.set_ylabel(names[1])
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def image_panel(columns: list[tuple[str, np.ndarray]], hr: np.ndarray, path: Path) -> Path:
    """Top row: each image (LR, bicubic, models, HR) on HR's colour scale; bottom row: image - HR (symmetric scale,
    shared), blank under LR (other size) and HR."""
    plt = _plt()
    n = len(columns)
    fig, axes = plt.subplots(2, n, figsize=(2.1 * n, 4.5), squeeze=False)
    lo, hi = float(np.min(hr)), float(np.max(hr))
    residuals = [img - hr for name, img in columns if img.shape == hr.shape and name != "HR"]
    lim = max((float(np.abs(r).max()) for r in residuals), default=1.0) or 1.0
    for j, (name, img) in enumerate(columns):
        axes[0, j].imshow(img, cmap="magma", vmin=lo, vmax=hi, interpolation="nearest")
        axes[0, j].set_title(name, fontsize=8)
        if img.shape == hr.shape and name != "HR":
            im = axes[1, j].imshow(img - hr, cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest")
            axes[1, j].set_title(f"{name} - HR", fontsize=7)
        for ax in axes[:, j]:
            ax.set_xticks([])
            ax.set_yticks([])
        if not (img.shape == hr.shape and name != "HR"):
            axes[1, j].axis("off")
    if residuals:
        fig.colorbar(im, ax=axes[1, :].tolist(), shrink=0.8, label="residual (data units)")
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def radial_profiles(profiles: list[tuple[str, np.ndarray, np.ndarray]], ring_radius: float | None,
                    half_width: float | None, path: Path) -> Path:
    """Azimuthal profiles (name, radii, values) about the HR ring centre, the HR ring annulus shaded."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for name, radii, values in profiles:
        ax.plot(radii, values, label=name, lw=2 if name == "HR" else 1.2, color="k" if name == "HR" else None)
    if ring_radius is not None:
        ax.axvspan(ring_radius - half_width, ring_radius + half_width, color="tab:orange", alpha=0.15,
                   label="HR ring annulus")
        ax.axvline(ring_radius, color="tab:orange", lw=1)
    ax.set_xlabel("radius from the HR ring centre (px)")
    ax.set_ylabel("azimuthal mean (data units)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def power_spectra(freq: np.ndarray, ratios: dict[str, np.ndarray], path: Path) -> Path:
    """Residual power relative to HR's per spatial frequency (log scale), one line per method."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for name, ratio in ratios.items():
        ok = np.isfinite(ratio) & (ratio > 0)
        ax.plot(freq[ok], ratio[ok], marker=".", label=name)
    ax.axhline(1.0, color="k", ls=":", lw=1, label="residual as strong as HR")
    ax.set_yscale("log")
    ax.set_xlabel("spatial frequency (cycles / HR px; Nyquist 0.5)")
    ax.set_ylabel("P(SR - HR) / P(HR)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, which="both")
    return _save(fig, path)


def is_informative(path: Path) -> dict[str, Any]:
    """Size in bytes and the pixel standard deviation of a PNG (a constant image has 0)."""
    plt = _plt()
    img = plt.imread(path)
    return {"bytes": path.stat().st_size, "std": float(np.std(img))}
