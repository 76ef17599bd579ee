import json
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lensearch.data.transforms import NORMALIZATIONS, build_augment, build_normalization
from lensearch.errors import UserError

STATS = {"mean": 0.3, "std": 0.7}


def _batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    lr = torch.randn(3, 1, 8, 8, generator=g, dtype=torch.float64) * 2 + 0.5  # noisy, with negatives
    hr = torch.randn(3, 1, 16, 16, generator=g, dtype=torch.float64) * 2 + 0.5
    return lr, hr


@pytest.mark.parametrize("cfg", ["none", "minmax", "zscore", {"name": "log", "softening": 0.05},
                                 {"name": "asinh", "softening": "auto"}, "log"])
def test_exact_inversion_and_state_roundtrip(cfg):
    lr, hr = _batch()
    norm = build_normalization(cfg, STATS)
    for x in (lr, hr):  # HR is normalised with the LR statistics
        y = norm.apply(x, lr)
        torch.testing.assert_close(norm.invert(y, lr), x, rtol=1e-12, atol=1e-12)
    state = json.loads(json.dumps(norm.state()))
    again = build_normalization(state)  # no stats needed: they live in the state
    assert again.state() == norm.state()
    torch.testing.assert_close(again.apply(hr, lr), norm.apply(hr, lr))


def test_registry_covers_the_documented_names():
    assert set(NORMALIZATIONS) == {"none", "minmax", "zscore", "log", "asinh"}


def test_minmax_uses_lr_stats_and_guards_constant():
    lr, hr = _batch()
    y = build_normalization("minmax").apply(lr, lr)
    torch.testing.assert_close(y.flatten(1).amin(1), torch.zeros(3, dtype=torch.float64))
    torch.testing.assert_close(y.flatten(1).amax(1), torch.ones(3, dtype=torch.float64))
    const = torch.full((1, 1, 4, 4), 2.0)
    assert torch.isfinite(build_normalization("minmax").apply(const, const)).all()


def test_symlog_keeps_sign_and_values():
    norm = build_normalization({"name": "log", "softening": 1.0})
    x = torch.tensor([-3.0, 0.0, 3.0], dtype=torch.float64).view(1, 1, 1, 3)
    want = torch.tensor([-np.log(4), 0, np.log(4)], dtype=torch.float64)
    torch.testing.assert_close(norm.apply(x, x).flatten(), want)


@pytest.mark.parametrize("cfg, stats, match", [
    ({"name": "asinh", "softening": -1}, None, r"normalization.softening: expected a positive number, got -1"),
    ({"name": "log"}, None, r"normalization.softening: 'auto'"),
    ({"name": "zscore"}, None, r"normalization.mean: zscore needs"),
    ({"name": "zscore", "std": 0}, {"mean": 0}, r"normalization.std: expected a positive number"),
    ("fancy", None, r"normalization.name: expected one of none, minmax"),
    ({"name": "minmax", "softening": 1}, None, r"normalization.softening: unknown key"),
])
def test_bad_normalization_config(cfg, stats, match):
    with pytest.raises(UserError, match=match):
        build_normalization(cfg, stats)


def _sample(h=8, w=8, seed=0):
    rng = np.random.default_rng(seed)
    hr = rng.random((1, 2 * h, 2 * w)).astype(np.float32)
    lr = hr.reshape(1, h, 2, w, 2).mean(axis=(2, 4))
    return {"lr": lr, "hr": hr, "hr_clean": hr.copy()}


def _d4(img: np.ndarray, square: bool) -> set[bytes]:
    """Independent reference: the images of the dihedral group D4 (all 8 for a square image; for a
    non-square one only the 4 that keep its shape: identity, both flips, rotation by 180 degrees)."""
    out = set()
    for k in range(4) if square else (0, 2):
        r = np.rot90(img, k, axes=(-2, -1))
        out |= {np.ascontiguousarray(r).tobytes(), np.ascontiguousarray(r[..., ::-1]).tobytes()}
    return out


@pytest.mark.parametrize("h, w", [(8, 8), (6, 10)])
def test_d4_commutes_with_downsampling(h, w):
    aug = build_augment({"flips": True, "rot90": True})
    s = _sample(h, w, 0)  # one sample: the outputs must be exactly its D4 images
    seen = set()
    for seed in range(64):
        out = aug(s, np.random.default_rng(seed))
        down = F.avg_pool2d(torch.from_numpy(out["hr"])[None], 2)[0].numpy()
        np.testing.assert_allclose(down, out["lr"], atol=1e-6)  # same op on LR and HR
        np.testing.assert_array_equal(out["hr"], out["hr_clean"])
        assert out["lr"].shape == s["lr"].shape and out["hr"].shape == s["hr"].shape  # non-square too
        seen.add(out["hr"].tobytes())
    assert seen == _d4(s["hr"], square=h == w)  # every element is reached, nothing else appears
    assert len(seen) == (8 if h == w else 4)


def test_noise_only_on_lr_and_deterministic():
    aug = build_augment({"flips": False, "rot90": False, "lr_noise_std": 0.1})
    s = _sample()
    a, b = aug(s, np.random.default_rng(1)), aug(s, np.random.default_rng(1))
    np.testing.assert_array_equal(a["lr"], b["lr"])
    np.testing.assert_array_equal(a["hr"], s["hr"])
    np.testing.assert_array_equal(a["hr_clean"], s["hr_clean"])
    assert a["lr"].dtype == np.float32
    assert 0.5 * 0.1 * s["lr"].std() < (a["lr"] - s["lr"]).std() < 2 * 0.1 * s["lr"].std()
    absolute = build_augment({"flips": False, "rot90": False, "lr_noise_std": 0.5, "lr_noise_relative": False})
    assert 0.3 < (absolute(s, np.random.default_rng(2))["lr"] - s["lr"]).std() < 0.7
    assert pickle.loads(pickle.dumps(aug))(s, np.random.default_rng(1))["lr"].tobytes() == a["lr"].tobytes()


def test_augment_config():
    assert build_augment(None) is None
    assert build_augment({"flips": False, "rot90": False}) is None
    with pytest.raises(UserError, match=r"augment.flip: unknown key"):
        build_augment({"flip": True})
    with pytest.raises(UserError, match=r"augment.lr_noise_std: expected a non-negative number"):
        build_augment({"lr_noise_std": -0.1})
