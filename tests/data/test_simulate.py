"""The lensing simulator: reproducibility, shapes, classes, physics consistency, noise, CLI and store."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

import lensearch.data.simulate as sim
from lensearch.cli import main
from lensearch.data.store import open_h5
from lensearch.errors import UserError

IMAGE_KEYS = ("hr", "hr_clean", "lr", "label", "params")


@pytest.fixture(scope="module")
def tiny():
    """12 tiny images, seed 3: four of each default class."""
    return sim.simulate_arrays("tiny", 12, 3)


def _equal(a: dict, b: dict, keys=IMAGE_KEYS) -> bool:
    return all(np.array_equal(a[k], b[k]) for k in keys)


def _block_mean(x: np.ndarray, f: int) -> np.ndarray:
    n, c, h, w = x.shape
    return x.reshape(n, c, h // f, f, w // f, f).mean(axis=(3, 5))


# --------------------------------------------------------------------------------------------- determinism
def test_same_seed_is_bit_identical_for_any_worker_count(tiny):
    again = sim.simulate_arrays("tiny", 12, 3)
    assert _equal(tiny, again)
    assert _equal(tiny, sim.simulate_arrays("tiny", 12, 3, workers=2))


def test_image_depends_only_on_seed_and_index(tiny):
    head = sim.simulate_arrays("tiny", 5, 3, classes="no_sub,cdm,vortex")  # other blocks, same images
    assert _equal({k: tiny[k][:5] for k in IMAGE_KEYS}, head)
    other = sim.simulate_arrays("tiny", 12, 4)
    assert not np.array_equal(tiny["hr"], other["hr"])
    assert not np.array_equal(tiny["params"], other["params"])


def test_switches_keep_the_same_sky(tiny):
    """noise_free_hr and lr_mode change only what they name: sky and LR noise draws are independent."""
    quiet = sim.simulate_arrays("tiny", 12, 3, noise_free_hr=True)
    assert np.array_equal(quiet["hr"], quiet["hr_clean"])
    assert _equal(tiny, quiet, keys=("hr_clean", "lr", "params", "label"))
    degraded = sim.simulate_arrays("tiny", 12, 3, lr_mode="degrade")
    assert _equal(tiny, degraded, keys=("hr", "hr_clean", "params"))
    assert not np.array_equal(tiny["lr"], degraded["lr"])


# --------------------------------------------------------------------------------------------- shapes
# Published / documented instruments (docs/simulation.md; DeepLenseSim Model I: 0.05"/px, FWHM 0.087"): HR pixel
# scale and PSF FWHM in arcsec. The scale-2 LR instrument has half the aperture: twice the pixel and FWHM.
INSTRUMENTS = {"tiny": (0.1, 0.16), "model_i": (0.05, 0.087), "model_ii": (0.05, 0.08), "model_iii": (0.04, 0.07)}


@pytest.mark.parametrize("preset,hr,lr", [("tiny", 64, 32), ("model_i", 150, 75), ("model_ii", 128, 64),
                                          ("model_iii", 128, 64)])
def test_shapes_and_dtypes(preset, hr, lr):
    d = sim.simulate_arrays(preset, 2, 0)
    assert d["hr"].shape == d["hr_clean"].shape == (2, 1, hr, hr)
    assert d["lr"].shape == (2, 1, lr, lr)
    assert d["label"].shape == (2,) and d["label"].dtype == np.int64
    assert d["params"].shape == (2, len(sim.PARAM_NAMES)) and d["params"].dtype == np.float32
    assert all(d[k].dtype == np.float32 for k in ("hr", "hr_clean", "lr"))
    assert all(np.isfinite(d[k]).all() for k in IMAGE_KEYS)
    assert d["param_names"] == list(sim.PARAM_NAMES)
    a = d["attrs"]
    assert a["preset"] == preset and a["source"] == "simulate" and a["units"] == sim.UNITS
    pixel, fwhm = INSTRUMENTS[preset]
    assert (a["pixel_scale_hr"], a["psf_fwhm_hr"]) == pytest.approx((pixel, fwhm))
    assert (a["pixel_scale_lr"], a["psf_fwhm_lr"]) == pytest.approx((2 * pixel, 2 * fwhm))


def test_scale_4():
    d = sim.simulate_arrays("tiny", 2, 0, scale=4)
    assert d["hr"].shape == (2, 1, 64, 64) and d["lr"].shape == (2, 1, 16, 16)
    assert d["attrs"]["pixel_scale_lr"] == pytest.approx(4 * d["attrs"]["pixel_scale_hr"])


def test_typical_peak_is_of_order_one(tiny):
    peaks = tiny["hr_clean"].reshape(12, -1).max(axis=1)
    assert 0.2 < np.median(peaks) < 5


# --------------------------------------------------------------------------------------------- classes
def test_default_classes_are_balanced_and_distinct(tiny):
    assert tiny["class_names"] == ["no_sub", "cdm", "vortex"]
    assert np.bincount(tiny["label"]).tolist() == [4, 4, 4]
    p = dict(zip(sim.PARAM_NAMES, tiny["params"].T))
    n_sub = {c: p["n_subhalos"][tiny["label"] == i] for i, c in enumerate(tiny["class_names"])}
    assert (n_sub["no_sub"] == 0).all() and (n_sub["cdm"] > 100).all() and (n_sub["vortex"] == 50).all()
    assert (p["theta_E"] > 0).all() and (p["lens_light_mag"] == 0).all()


def test_non_lens_class_and_lens_light():
    d = sim.simulate_arrays("tiny", 8, 1, include_non_lens=True, lens_light=True)
    assert d["class_names"] == ["no_sub", "cdm", "vortex", "non_lens"]
    assert np.bincount(d["label"]).tolist() == [2, 2, 2, 2]
    p = dict(zip(sim.PARAM_NAMES, d["params"].T))
    unlensed = d["label"] == 3
    assert (p["theta_E"][unlensed] == 0).all() and (p["theta_E"][~unlensed] > 0).all()
    assert (p["gamma1"][unlensed] == 0).all() and (p["n_subhalos"][unlensed] == 0).all()
    assert (p["lens_light_mag"] > 0).all()


def test_point_mass_einstein_radius():
    # 1e10 Msun at z_l=0.5, z_s=1 (flat LCDM, H0=70, Om=0.3): sqrt(4GM/c^2 D_ls/(D_l D_s)) = 0.166"
    assert sim.point_mass_theta_E(1e10) == pytest.approx(0.1665, rel=0.01)


# --------------------------------------------------------------------------------------------- physics
@pytest.mark.parametrize("lr_mode", ["instrument", "degrade"])
def test_lr_and_hr_see_the_same_mean_surface_brightness(lr_mode):
    """Both are surface brightness: the LR image mean equals the HR one up to LR noise (and PSF edge
    losses, ~0.1 % of the flux)."""
    d = sim.simulate_arrays("tiny", 6, 2, lr_mode=lr_mode)
    lr_instrument = sim.PRESETS["tiny"].lr(2)
    for lr, clean in zip(d["lr"], d["hr_clean"]):
        noise = np.sqrt((lr_instrument.noise_std(_block_mean(clean[None], 2)) ** 2).sum()) / lr.size
        assert abs(lr.mean() - clean.mean()) < 5 * noise + 0.005 * clean.mean()


def test_degrade_is_blur_downsample_plus_lr_noise():
    d = sim.simulate_arrays("tiny", 6, 2, lr_mode="degrade")
    preset = sim.PRESETS["tiny"]
    hr, lr = preset.hr, preset.lr(2)
    sigma_px = np.sqrt(lr.psf_fwhm**2 - hr.psf_fwhm**2) / 2.3548 / hr.pixel_scale
    blurred = ndimage.gaussian_filter(d["hr_clean"], (0, 0, sigma_px, sigma_px), mode="nearest", truncate=4)
    expected = _block_mean(blurred, 2)
    z = (d["lr"] - expected) / lr.noise_std(expected)
    assert abs(z.mean()) < 0.05 and 0.95 < z.std() < 1.05


def test_hr_noise_has_the_expected_level(tiny):
    z = (tiny["hr"] - tiny["hr_clean"]) / sim.PRESETS["tiny"].hr.noise_std(tiny["hr_clean"])
    assert abs(z.mean()) < 0.03 and 0.97 < z.std() < 1.03


# --------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("kwargs,culprit", [
    ({"preset": "nope"}, "nope"), ({"count": 0}, "0"), ({"scale": 3}, "3"),
    ({"preset": "model_i", "scale": 4}, "model_i"), ({"classes": ["cdm", "wdm"]}, "wdm"),
    ({"lr_mode": "blur"}, "blur"), ({"seed": -1}, "-1"),
])
def test_bad_arguments_are_user_errors(kwargs, culprit):
    args = {"preset": "tiny", "count": 2, "seed": 0, **kwargs}
    with pytest.raises(UserError) as err:
        sim.simulate_arrays(args.pop("preset"), args.pop("count"), args.pop("seed"), **args)
    assert culprit in str(err.value) and "\n" not in str(err.value)


# --------------------------------------------------------------------------------------------- files, CLI
def test_cli_writes_a_complete_file(tmp_path, capsys):
    out = tmp_path / "sim.h5"
    assert main(["simulate", "--out", str(out), "--count", "9", "--seed", "5", "--non-lens", "--quiet"]) == 0
    info = open_h5(out)
    assert info.n == 9 and info.hr_shape == (64, 64) and info.lr_shape == (32, 32) and info.has_clean
    assert info.class_names == ["no_sub", "cdm", "vortex", "non_lens"]
    assert info.param_names == list(sim.PARAM_NAMES)
    assert info.attrs["seed"] == 5 and info.attrs["preset"] == "tiny" and sum(info.splits.values()) == 9
    line = capsys.readouterr().out.strip()
    assert str(out) in line and "9 images" in line and "images/s" in line
    assert not (tmp_path / "sim.h5.partial").exists()


def test_interrupted_run_leaves_no_file(tmp_path, monkeypatch):
    calls = []
    real = sim.simulate_block

    def failing(config, start, stop):
        calls.append(start)
        if len(calls) == 2:
            raise RuntimeError("boom")
        return real(config, start, stop)

    monkeypatch.setattr(sim, "simulate_block", failing)
    out = tmp_path / "sim.h5"
    with pytest.raises(RuntimeError, match="boom"):
        sim.simulate_to_h5(out, "tiny", 8, 0)
    assert len(calls) == 2
    assert not out.exists() and not (tmp_path / "sim.h5.partial").exists()


def test_cli_unknown_preset_exits_2_with_one_line(tmp_path, capsys):
    assert main(["simulate", "--out", str(tmp_path / "x.h5"), "--preset", "nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "nope" in err and "tiny" in err and "model_i" in err
    assert not list(tmp_path.iterdir())


def test_unwritable_output_is_one_line_and_exit_2(tmp_path, capsys):
    from lensearch.cli import main

    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert main(["simulate", "--count", "16", "--out", str(blocker / "x.h5"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "cannot write here" in err and str(blocker / "x.h5") in err
