"""Physics-fidelity measures on constructed images whose answers are known by construction."""

from __future__ import annotations

import numpy as np
import pytest

from lensearch.report.physics import (fit_ring, flux_error, physics_measures, radial_profile,
                                      residual_power_spectrum, ring_residual)


def gaussian_ring(center, radius, sigma, shape=(64, 64), amplitude=1.0, background=0.1):
    rows, cols = np.indices(shape, dtype=np.float64)
    d = np.hypot(rows - center[0], cols - center[1])
    return amplitude * np.exp(-0.5 * ((d - radius) / sigma) ** 2) + background


def lens_light(center, shape=(64, 64), amplitude=0.5, sigma=2.0):
    rows, cols = np.indices(shape, dtype=np.float64)
    return amplitude * np.exp(-0.5 * (np.hypot(rows - center[0], cols - center[1]) / sigma) ** 2)


@pytest.mark.parametrize("center,radius,sigma", [((33.3, 30.7), 15.2, 1.5), ((31.5, 31.5), 10.0, 1.0),
                                                 ((28.9, 35.2), 12.7, 2.0), ((32.0, 32.0), 8.4, 1.2)])
def test_ring_radius_and_centre_recovered_to_a_fraction_of_a_pixel(center, radius, sigma):
    for img in (gaussian_ring(center, radius, sigma),                               # bare ring
                gaussian_ring(center, radius, sigma) + lens_light(center),          # with central lens light
                gaussian_ring(center, radius, sigma)
                + np.random.default_rng(0).normal(0, 0.05, (64, 64))):              # with noise
        ring = fit_ring(img)
        assert ring.radius == pytest.approx(radius, abs=0.1)
        assert np.hypot(ring.center[0] - center[0], ring.center[1] - center[1]) < 0.15


def test_ring_errors_between_two_rings_are_their_known_differences():
    hr = gaussian_ring((32.0, 31.0), 12.0, 1.5)
    sr = gaussian_ring((32.6, 31.8), 12.5, 1.5)  # centre 1.0 px away, radius +0.5 px
    m = physics_measures(sr, hr)
    assert m["ring_radius_error"] == pytest.approx(0.5, abs=0.08)
    assert m["ring_center_error"] == pytest.approx(1.0, abs=0.1)
    assert physics_measures(hr, hr)["ring_residual"] == 0.0


def test_flux_error_of_a_scaled_copy_is_the_scale_minus_one():
    hr = gaussian_ring((31.5, 31.5), 10.0, 1.5)
    assert flux_error(1.07 * hr, hr) == pytest.approx(0.07, rel=1e-9)
    assert flux_error(0.9 * hr, hr) == pytest.approx(-0.1, rel=1e-9)
    assert physics_measures(1.07 * hr, hr)["flux_error"] == pytest.approx(0.07, rel=1e-9)


def test_ring_residual_is_the_relative_error_inside_the_ring_annulus():
    hr = gaussian_ring((31.5, 31.5), 10.0, 1.5, background=0.0) + 1.0
    ring = fit_ring(hr)
    # an error far outside the annulus does not count; a 5 % error everywhere counts as 5 %
    far = hr.copy()
    far[:3, :3] += 10.0
    assert ring_residual(far, hr, ring) == 0.0
    assert ring_residual(1.05 * hr, hr, ring) == pytest.approx(0.05, rel=1e-9)


def test_radial_profile_of_a_radial_ramp_is_its_radius():
    rows, cols = np.indices((65, 65), dtype=np.float64)
    ramp = np.hypot(rows - 32, cols - 32)
    radii, values = radial_profile(ramp, bin_width=1.0)
    assert radii[0] == 0.5 and len(radii) == 33
    # the mean radius of the pixels in [k, k+1) lies inside the bin
    ok = np.isfinite(values)
    assert np.all(np.abs(values[ok] - radii[ok]) <= 0.5)


@pytest.mark.parametrize("cycles", [4, 8, 13])
def test_residual_power_spectrum_peaks_in_the_bin_of_the_residual_frequency(cycles):
    hr = gaussian_ring((31.5, 31.5), 10.0, 1.5)
    x = np.arange(64)
    residual = 0.05 * np.cos(2 * np.pi * cycles / 64 * x)[None, :] * np.ones((64, 1))
    spec = residual_power_spectrum(hr + residual, hr)
    freq = cycles / 64
    k = int(np.nanargmax(spec["residual"]))
    edges = np.linspace(0, 0.5, len(spec["frequency"]) + 1)
    assert edges[k] <= freq < edges[k + 1]
    assert int(np.nanargmax(spec["ratio"])) == k
    # the residual's total power is Parseval's: mean square 0.05^2 / 2 per pixel, all of it in that bin
    counts = np.bincount(np.clip(np.digitize(np.hypot(*np.meshgrid(np.fft.fftfreq(64), np.fft.fftfreq(64),
                                                                      indexing="ij")).ravel(), edges) - 1, 0, 32),
                         minlength=33)[:32]
    assert spec["residual"][k] * counts[k] == pytest.approx(64 * 64 * 0.05**2 / 2, rel=1e-6)
