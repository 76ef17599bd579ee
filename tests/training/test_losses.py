"""Training losses: pixel/SSIM losses, the generator-loss builder, FeatureNet content loss, GAN losses."""

from __future__ import annotations

import math

import pytest
import torch

from lensearch.errors import UserError
from lensearch.models.feature_net import FeatureNet, load_feature_net, save_feature_net
from lensearch.training import losses
from lensearch.training.losses import AdversarialLoss, build_generator_loss


@pytest.fixture
def pair():
    torch.manual_seed(0)
    hr = torch.rand(2, 1, 24, 20)
    return hr + 0.2 * torch.randn_like(hr), hr


@pytest.mark.parametrize("fn", [losses.l1, losses.mse, losses.charbonnier, losses.ssim_loss])
def test_pixel_losses_shrink_to_zero(fn, pair):
    noisy, hr = pair
    values = [fn(hr + a * (noisy - hr), hr).item() for a in (1.0, 0.5, 0.1, 0.0)]
    assert values == sorted(values, reverse=True) and values[0] > 0
    assert values[-1] == pytest.approx(0.0, abs=1e-6)


def test_default_loss_is_l1(pair):
    sr, hr = pair
    sr.requires_grad_(True)
    total, parts = build_generator_loss({})(sr, hr)
    assert set(parts) == {"pixel"} and torch.allclose(total, losses.l1(sr, hr))
    total.backward()
    assert sr.grad is not None


def test_weighted_sum(pair):
    sr, hr = pair
    loss = build_generator_loss({"pixel": "charbonnier", "pixel_weight": 0.5, "ssim_weight": 2.0,
                                 "charbonnier_eps": 1e-2})
    total, parts = loss(sr, hr)
    assert set(parts) == {"pixel", "ssim"}
    assert torch.allclose(parts["pixel"], losses.charbonnier(sr, hr, eps=1e-2))
    assert torch.allclose(total, 0.5 * parts["pixel"] + 2.0 * parts["ssim"])
    assert loss.adv_weight == 5e-3 and loss.adversarial == "ragan"


@pytest.mark.parametrize("cfg, match", [
    ({"pixle": "l1"}, r"loss\.pixle: unknown parameter \(did you mean 'pixel'\?\); valid: pixel, pixel_weight"),
    ({"pixel": "l3"}, r"loss\.pixel: expected one of 'l1', 'mse', 'charbonnier', got 'l3'"),
    ({"ssim_weight": -1}, r"loss\.ssim_weight: expected float in \[0, inf\]"),
    ({"adv_weight": "much"}, r"loss\.adv_weight: expected float"),
    ({"pixel_weight": 0}, r"loss\.pixel_weight: expected pixel_weight, ssim_weight or content_weight > 0"),
    ({"content_weight": 1.0}, r"loss\.content_weights: required when loss\.content_weight > 0"),
])
def test_config_errors(cfg, match):
    with pytest.raises(UserError, match=match):
        build_generator_loss(cfg)


# --- content loss ---------------------------------------------------------------------------------------


def _saved_net(tmp_path, **config):
    torch.manual_seed(0)
    net = FeatureNet(**config)
    path = tmp_path / "feature_net.pt"
    save_feature_net(net, path)
    return net, path


def test_feature_net_outputs():
    feats, logits = FeatureNet(num_classes=3, base_channels=4, num_stages=3)(torch.rand(2, 1, 33, 30))
    assert [f.shape for f in feats] == [(2, 4, 33, 30), (2, 8, 17, 15), (2, 16, 9, 8)]
    assert logits.shape == (2, 3)


def test_content_loss_from_saved_weights(tmp_path, pair):
    net, path = _saved_net(tmp_path, base_channels=4, num_stages=2)
    sr, hr = pair
    sr.requires_grad_(True)
    loss = build_generator_loss({"content_weight": 0.1, "content_weights": str(path)})
    loss.train()
    assert not loss.content.net.training  # BN statistics stay frozen
    total, parts = loss(sr, hr)
    assert set(parts) == {"pixel", "content"} and parts["content"] > 0
    assert torch.allclose(total, parts["pixel"] + 0.1 * parts["content"])
    total.backward()
    assert sr.grad is not None and all(p.grad is None for p in loss.content.net.parameters())
    assert loss(hr, hr)[1]["content"] == 0
    # the saved config travels with the weights: the loaded net computes what the saved one did
    loaded = load_feature_net(path).eval()
    assert torch.equal(loaded(hr)[1], net.eval()(hr)[1])


def test_content_loss_with_a_module(pair):
    sr, hr = pair
    _, parts = build_generator_loss({"content_weight": 1.0}, feature_net=FeatureNet(base_channels=4))(sr, hr)
    assert parts["content"] > 0


def test_feature_net_file_errors(tmp_path):
    with pytest.raises(UserError, match=r"loss\.content_weights: FeatureNet weights file not found: .*nope\.pt"):
        build_generator_loss({"content_weight": 1.0, "content_weights": str(tmp_path / "nope.pt")})
    bare = tmp_path / "bare.pt"  # a bare state dict is read with the default config: wrong shapes here
    torch.save(FeatureNet(base_channels=8).state_dict(), bare)
    with pytest.raises(UserError, match=r"bare\.pt does not fit FeatureNet\(defaults\): .*size mismatch"):
        load_feature_net(bare)
    torch.save(FeatureNet().state_dict(), bare)
    assert isinstance(load_feature_net(bare), FeatureNet)
    junk = tmp_path / "junk.pt"
    junk.write_text("not a checkpoint")
    with pytest.raises(UserError, match=r"loss\.content_weights: cannot read .*junk\.pt"):
        load_feature_net(junk)


# --- adversarial losses ---------------------------------------------------------------------------------


def test_ragan_signs_and_values():
    adv = AdversarialLoss("ragan")
    real, fake = torch.full((4,), 6.0), torch.full((4,), -6.0)
    assert adv.d_loss(real, fake) < 1e-4          # D separates real from fake: nothing to learn
    assert adv.g_loss(real, fake) > 10            # G is far from fooling it
    same = torch.randn(4)
    assert adv.d_loss(same, same.clone()).item() == pytest.approx(adv.g_loss(same, same.clone()).item())
    equal = torch.zeros(4)
    assert adv.d_loss(equal, equal).item() == pytest.approx(math.log(2))
    # relativistic: only the difference to the other side's mean matters
    r, f = torch.randn(8), torch.randn(8)
    assert torch.allclose(adv.d_loss(r + 3, f + 3), adv.d_loss(r, f))
    assert torch.allclose(adv.g_loss(r + 3, f + 3), adv.g_loss(r, f))


def test_vanilla_and_unknown_kind():
    adv = AdversarialLoss("vanilla")
    assert adv.d_loss(torch.full((2,), 6.0), torch.full((2,), -6.0)) < 1e-2
    assert adv.g_loss(torch.zeros(2), torch.zeros(2)).item() == pytest.approx(math.log(2))
    assert adv.g_loss(torch.zeros(2), torch.full((2,), 6.0)) < 1e-2
    with pytest.raises(UserError, match=r"loss\.adversarial: expected one of 'vanilla', 'ragan', got 'wgan'"):
        AdversarialLoss("wgan")


# --- losses in a fixed space whatever the normalization ---------------------------------------------------


@pytest.mark.parametrize("scale, offset", [(1e-3, 0.0), (1.0, 0.0), (1e3, -40.0)])
def test_ssim_loss_uses_the_targets_data_range(pair, scale, offset):
    """Against scikit-image on the images the validation SSIM scores (each pair scaled by the target's
    range, min -> 0, max -> 1, in float64): the same loss in any units, as the normalizations leave them."""
    from skimage.metrics import structural_similarity

    sr, hr = pair
    sr, hr = scale * sr + offset, scale * hr + offset
    want = []
    for s, h in zip(sr.double().numpy(), hr.double().numpy()):
        lo, span = h.min(), h.max() - h.min()
        want.append(structural_similarity((s[0] - lo) / span, (h[0] - lo) / span, gaussian_weights=True,
                                          sigma=1.5, use_sample_covariance=False, data_range=1.0))
    assert losses.ssim_loss(sr, hr).item() == pytest.approx(1 - sum(want) / len(want), abs=1e-4)


NORMS = [{"name": "none"}, {"name": "minmax"}, {"name": "zscore"}, {"name": "log", "softening": 0.05},
         {"name": "asinh", "softening": 0.05}]


@pytest.mark.parametrize("cfg", NORMS, ids=[c["name"] for c in NORMS])
def test_content_loss_sees_the_same_images_whatever_the_normalization(cfg):
    """The loss gets normalised images; the FeatureNet must see data units scaled by the HR's range."""
    from lensearch.data.transforms import build_normalization

    torch.manual_seed(0)
    hr = 3.0 * torch.rand(3, 1, 24, 24) ** 3 + 0.1            # data units, far from [0, 1]
    sr = hr + 0.3 * torch.randn_like(hr)
    lr = torch.nn.functional.avg_pool2d(hr, 2)
    norm = build_normalization(cfg, {"mean": 0.5, "std": 0.7})
    net = FeatureNet(base_channels=4).eval()
    lo = hr.amin(dim=(1, 2, 3), keepdim=True)
    span = hr.amax(dim=(1, 2, 3), keepdim=True) - lo
    with torch.no_grad():  # independent reference: features of the unit-scaled data-unit images
        f_sr, _ = net((sr - lo) / span)
        f_hr, _ = net((hr - lo) / span)
    want = torch.stack([(a - b).abs().mean() for a, b in zip(f_sr, f_hr)]).mean()
    loss = build_generator_loss({"pixel_weight": 0.0, "content_weight": 1.0}, feature_net=net, normalization=norm)
    total, parts = loss(norm.apply(sr, lr), norm.apply(hr, lr))
    assert parts["content"].item() == pytest.approx(want.item(), rel=1e-4)
    late = build_generator_loss({"pixel_weight": 0.0, "content_weight": 1.0}, feature_net=net).set_normalization(norm)
    assert late(norm.apply(sr, lr), norm.apply(hr, lr))[1]["content"].item() == pytest.approx(want.item(), rel=1e-4)


def test_relative_feature_net_path_is_made_absolute_for_trials(tmp_path, monkeypatch):
    """A relative loss.content_weights validates on the driver; trials run in their own directory."""
    from lensearch.search.space import compile_space
    from lensearch.training.losses import absolute_loss_paths

    save_feature_net(FeatureNet(base_channels=4), tmp_path / "fn.pt")
    monkeypatch.chdir(tmp_path)
    space = compile_space({"model": {"name": "rdn"}, "loss": {"content_weight": 0.1, "content_weights": "fn.pt"}})
    trial_dir = tmp_path / "trials" / "t1"
    trial_dir.mkdir(parents=True)
    monkeypatch.chdir(trial_dir)  # what Ray Tune does before the trial function runs
    config = space.materialize({})
    assert config["loss"]["content_weights"] == str(tmp_path / "fn.pt")
    build_generator_loss(config["loss"])  # found from the trial's directory
    assert absolute_loss_paths(config, "/elsewhere") == config  # absolute paths stay
    assert absolute_loss_paths({"loss": {"content_weights": "a/b.pt"}}, tmp_path)["loss"]["content_weights"] == \
        str(tmp_path / "a" / "b.pt")
    assert absolute_loss_paths({"loss": {}}, tmp_path) == {"loss": {}}
