"""The scikit-image SSIM convention, reimplemented in torch, against scikit-image itself."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from lensearch.errors import UserError
from lensearch.metrics import unit_scale
from lensearch.report.conventions import ssim_both, ssim_uniform7


@pytest.mark.parametrize("shape,noise,data_range", [((40, 37), 0.1, 1.0), ((64, 64), 0.02, 2.5), ((7, 9), 0.3, 1.0)])
def test_uniform7_ssim_matches_scikit_image_on_random_images(shape, noise, data_range):
    rng = np.random.default_rng(1)
    a = rng.random(shape) * data_range
    b = a + noise * data_range * rng.normal(size=shape)
    want = structural_similarity(a, b, data_range=data_range)
    assert float(ssim_uniform7(b, a, data_range)) == pytest.approx(want, abs=1e-10)


def test_both_conventions_on_lensing_images_match_scikit_image(tiny_h5):
    from lensearch.data.baseline import upsample
    from lensearch.data.store import iter_batches

    batch = next(iter_batches(tiny_h5, "val", 6, ("lr", "hr")))
    hr = torch.from_numpy(batch["hr"]).double()
    sr = upsample(torch.from_numpy(batch["lr"]).double(), hr.shape[-2:])
    got = ssim_both(sr, hr)
    p, r = unit_scale(sr, hr)
    for i in range(hr.shape[0]):
        x, y = p[i, 0].numpy(), r[i, 0].numpy()
        assert float(got["ssim_skimage"][i]) == pytest.approx(structural_similarity(x, y, data_range=1.0), abs=1e-10)
        gauss = structural_similarity(x, y, data_range=1.0, gaussian_weights=True, sigma=1.5,
                                      use_sample_covariance=False)
        assert float(got["ssim"][i]) == pytest.approx(gauss, abs=1e-8)
    # the two conventions are different numbers on these images (the report labels both)
    assert not torch.allclose(got["ssim"], got["ssim_skimage"], atol=1e-4)


def test_uniform7_ssim_refuses_images_smaller_than_its_window():
    with pytest.raises(UserError, match="at least 7x7"):
        ssim_uniform7(np.zeros((6, 20)), np.zeros((6, 20)))
