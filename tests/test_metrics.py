import math

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from lensearch.errors import UserError
from lensearch.metrics import MetricSums, evaluate, mse, psnr, ssim, unit_scale


def _pairs(n=4, c=1, h=32, w=27, seed=0):
    rng = np.random.default_rng(seed)
    ref = rng.random((n, c, h, w))
    pred = np.clip(ref + 0.1 * rng.standard_normal(ref.shape), 0, 1)
    return pred, ref


def _sk_ssim(p, r):
    return structural_similarity(p, r, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                 data_range=1.0, channel_axis=0)


@pytest.mark.parametrize("shape", [(1, 32, 27), (3, 16, 40)])
def test_against_skimage(shape):
    pred, ref = _pairs(3, *shape)
    tp, tr = torch.from_numpy(pred), torch.from_numpy(ref)
    want_psnr = [peak_signal_noise_ratio(r, p, data_range=1.0) for p, r in zip(pred, ref)]
    want_ssim = [_sk_ssim(p, r) for p, r in zip(pred, ref)]
    np.testing.assert_allclose(psnr(tp, tr).numpy(), want_psnr, rtol=1e-6)
    np.testing.assert_allclose(ssim(tp, tr).numpy(), want_ssim, rtol=1e-6)
    np.testing.assert_allclose(mse(tp, tr).numpy(), ((pred - ref) ** 2).mean(axis=(1, 2, 3)), rtol=1e-12)
    # float32 stays within the contract's tolerance
    np.testing.assert_allclose(ssim(tp.float(), tr.float()).numpy(), want_ssim, rtol=1e-4)
    np.testing.assert_allclose(psnr(tp.float(), tr.float()).numpy(), want_psnr, rtol=1e-4)


def test_identity_and_cap():
    x = torch.rand(2, 1, 16, 16)
    assert torch.allclose(ssim(x, x), torch.ones(2))
    assert torch.allclose(psnr(x, x), torch.full((2,), 100.0))


def test_small_images_rejected():
    x = torch.rand(1, 1, 10, 20)
    with pytest.raises(UserError, match="at least 11x11"):
        ssim(x, x)


def test_ssim_is_differentiable():
    pred, ref = (torch.from_numpy(a).float() for a in _pairs(2))
    pred.requires_grad_(True)
    (1 - ssim(pred, ref).mean()).backward()
    assert pred.grad is not None and torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0


def test_unit_scale_and_evaluate():
    ref = torch.rand(2, 1, 16, 16) * 50 + 10
    pred = ref + torch.randn_like(ref)
    p, r = unit_scale(pred, ref)
    assert torch.allclose(r.amin(dim=(1, 2, 3)), torch.zeros(2))
    assert torch.allclose(r.amax(dim=(1, 2, 3)), torch.ones(2))
    span = (ref.amax(dim=(1, 2, 3)) - ref.amin(dim=(1, 2, 3)))
    got = evaluate(pred, ref)
    assert set(got) == {"psnr", "ssim", "mse"} and all(v.shape == (2,) for v in got.values())
    assert torch.allclose(got["mse"], mse(pred, ref) / span**2, rtol=1e-4)
    # identity for data already spanning [0, 1]
    ref01, pred01 = unit_scale(ref, ref)[1], unit_scale(pred, ref)[0]
    assert torch.allclose(evaluate(pred01, ref01)["psnr"], got["psnr"], rtol=1e-5)
    # constant reference: shifted, not divided by zero
    const = torch.full((1, 1, 16, 16), 3.0)
    out = evaluate(const + 0.5, const)
    assert all(torch.isfinite(v).all() for v in out.values())
    assert math.isclose(float(out["mse"]), 0.25, rel_tol=1e-6)


def test_metric_sums_roundtrip():
    pred, ref = (torch.from_numpy(a).float() for a in _pairs(6))
    names = ["psnr", "ssim", "mse", "psnr_clean", "ssim_clean", "mse_clean"]
    a, b = MetricSums(names), MetricSums(names)
    a.update(pred[:2], ref[:2])
    b.update(pred[2:], ref[2:])
    b.update(pred[2:], ref[2:], suffix="_clean")
    # simulated all-reduce
    total = MetricSums.from_tensor(a.as_tensor() + b.as_tensor(), names)
    means = total.means(prefix="val_")
    full = evaluate(pred, ref)
    for k in ("psnr", "ssim", "mse"):
        assert math.isclose(means[f"val_{k}"], float(full[k].double().mean()), rel_tol=1e-6)
        assert math.isclose(means[f"val_{k}_clean"], float(full[k][2:].double().mean()), rel_tol=1e-6)
    assert total.counts == {**{k: 6 for k in names[:3]}, **{k: 4 for k in names[3:]}}
    assert math.isnan(MetricSums().means()["psnr"])
    with pytest.raises(KeyError):
        MetricSums(["psnr"]).add({"ssim": torch.ones(1)})
