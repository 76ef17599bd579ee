"""Parameter importance and effects on synthetic studies with a known answer."""

from __future__ import annotations

import numpy as np
import pytest

from lensearch.report.importance import effects, findings, importances, infer_distributions


def _points(n=40, seed=0):
    """One parameter (the optimizer's learning rate) alone drives the objective; the others are noise-free
    passengers drawn independently."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        lr = float(10 ** rng.uniform(-4, -2))
        params = {"optimizer.adam.lr": lr, "normalization": str(rng.choice(["none", "asinh"])),
                  "train.batch_size": int(rng.choice([8, 16])), "loss.pixel": str(rng.choice(["l1", "charbonnier"]))}
        if params["normalization"] == "asinh":  # a conditional parameter, as the search spaces have
            params["normalization.asinh.softening"] = float(rng.uniform(0.05, 1.0))
        out.append((params, 30.0 + 3.0 * (np.log10(lr) + 4)))
    return out


def test_the_one_parameter_that_drives_the_objective_ranks_first_for_every_evaluator():
    result = importances(_points(), "max")
    ran = [k for k in ("fANOVA", "PED-ANOVA") if k in result]
    assert ran, result["skipped"]
    for name in ran:
        ranked = list(result[name])
        assert ranked[0] == "optimizer.adam.lr", (name, result[name])
        assert result[name]["optimizer.adam.lr"] > 0.5
        assert sum(result[name].values()) == pytest.approx(1.0)


def test_distributions_are_inferred_from_logged_values():
    dists = infer_distributions([p for p, _ in _points()])
    assert dists["optimizer.adam.lr"].log and dists["optimizer.adam.lr"].low >= 1e-4
    assert set(dists["normalization"].choices) == {"none", "asinh"}
    assert type(dists["train.batch_size"]).__name__ == "IntDistribution"
    assert "normalization.asinh.softening" in dists


def test_effects_and_findings_give_the_known_difference_with_a_ci_that_covers_it():
    pts = []
    for i in range(20):  # asinh is exactly 0.5 dB better; noise of +-0.1 around it
        noise = 0.1 * (-1) ** i
        pts.append(({"normalization": "asinh" if i % 2 else "none"}, 40.0 + (0.5 if i % 2 else 0.0) + noise))
    eff = effects(pts)
    assert [e.param for e in eff] == ["normalization"]
    summary = eff[0].summary()
    assert summary["asinh"][0] == pytest.approx(40.4) and summary["none"][0] == pytest.approx(40.1)
    assert summary["asinh"][3] == 10
    (line,) = findings(eff, "val_psnr", "max")
    assert line.startswith("normalization: asinh beats none on val_psnr by 0.3 dB [95 % CI")
    assert "over 20 trials (10 vs 10)" in line
    lo, hi = (float(x) for x in line.split("CI ")[1].split("]")[0].split(", "))
    assert lo <= 0.3 <= hi and lo > 0


def test_too_few_trials_are_skipped_with_a_reason():
    result = importances(_points(1), "max")
    assert "fANOVA" not in result and "need at least 2" in result["skipped"]["fANOVA"]
