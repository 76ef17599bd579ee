"""Training the way a CPU budget needs it: random aligned patches, epochs counted in optimizer steps, a
warmed-up weight average, a per-run time limit and the gap-closed metrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lensearch.data.store import SRDataset, check_patch_size, open_h5, random_patch, train_stats
from lensearch.errors import UserError
from lensearch.training.config import resolve_run_config
from lensearch.training.context import RunContext
from lensearch.training.ema import WarmEMA
from lensearch.training.loop import DrawSampler, fit, gap_metrics
from lensearch.training.runinfo import RunInfo

ESPCN = {"name": "espcn", "num_features": 8, "num_layers": 3}


def _fit(tiny_h5, tmp_path, train, lr=2e-3, **run_extra):
    run = RunInfo(data_path=str(tiny_h5), dir=str(tmp_path), scale=2, has_clean=True, stats=train_stats(tiny_h5),
                  **run_extra)
    reports = []
    config = resolve_run_config({"model": ESPCN, "optimizer": {"name": "adam", "lr": lr}, "train": train})
    fit(config, run, RunContext(torch.device("cpu"), report_fn=reports.append))
    return reports


def test_random_patch_is_an_aligned_crop_of_every_image():
    rng = np.random.default_rng(0)
    lr = rng.random((1, 10, 12)).astype(np.float32)
    hr = rng.random((1, 20, 24)).astype(np.float32)
    sample = {"lr": lr, "hr": hr, "hr_clean": hr + 1}
    for seed in range(20):
        out = random_patch(sample, 4, 2, np.random.default_rng(seed))
        assert out["lr"].shape == (1, 4, 4) and out["hr"].shape == out["hr_clean"].shape == (1, 8, 8)
        # locate the LR crop, then the HR crop must be the same sky: rows/cols scaled by 2
        ys, xs = np.nonzero((np.lib.stride_tricks.sliding_window_view(lr[0], (4, 4)) == out["lr"][0]).all((-1, -2)))
        y, x = int(ys[0]), int(xs[0])
        np.testing.assert_array_equal(out["hr"][0], hr[0, 2 * y:2 * y + 8, 2 * x:2 * x + 8])
        np.testing.assert_array_equal(out["hr_clean"], out["hr"] + 1)


def test_patch_dataset_yields_patches_and_patch_sizes_are_checked(tiny_h5):
    ds = SRDataset(tiny_h5, split="train", patch_size=32)
    item = ds[0]
    assert item["lr"].shape == (1, 16, 16) and item["hr"].shape == (1, 32, 32)
    info = open_h5(tiny_h5)
    with pytest.raises(UserError, match=r"train.patch_size: expected a multiple of the data's scale 2, got 33"):
        check_patch_size(33, info)
    with pytest.raises(UserError, match=r"train.patch_size: expected at most the HR image size 64 px, got 96"):
        SRDataset(tiny_h5, split="train", patch_size=96)


def test_draw_sampler_is_seeded_per_rank_and_epoch():
    a, b = DrawSampler(50, 30, seed=1, rank=0), DrawSampler(50, 30, seed=1, rank=1)
    first = list(a)
    assert len(first) == len(a) == 30 and all(0 <= i < 50 for i in first)
    assert list(a) == first and list(b) != first
    a.set_epoch(2)
    assert list(a) != first


def test_warm_ema_follows_the_live_weights_at_first_then_averages():
    model = torch.nn.Linear(3, 1, bias=False)
    ema = WarmEMA(model, decay=0.999)
    decays = []
    for step in range(200):
        with torch.no_grad():
            model.weight.fill_(float(step))
        decays.append(ema.current_decay())
        ema.update(model)
    assert decays[0] == pytest.approx(0.1) and decays[90] == pytest.approx(91 / 100)
    assert all(d <= 0.999 for d in decays)
    # a plain 0.999 EMA from weights 0 would sit near 0.999**... of the early values (~19 after 200 steps);
    # the warmed-up one tracks recent weights: within ~10 % of the last value
    assert ema.module.weight.mean().item() > 0.85 * 199
    restored = WarmEMA(model, 0.999)
    restored.load_state_dict(ema.state_dict())
    assert restored.updates == 200 and torch.equal(restored.module.weight, ema.module.weight)


def test_epochs_of_fixed_steps_on_patches_report_steps_and_learn(tiny_h5, tmp_path):
    reports = _fit(tiny_h5, tmp_path, {"epochs": 3, "batch_size": 8, "patch_size": 32, "steps_per_epoch": 25,
                                       "ema_decay": 0.99})
    assert [r["steps"] for r in reports] == [25, 50, 75]
    assert [r["images_per_s"] > 0 for r in reports] == [True] * 3
    assert reports[0]["train_seconds"] < reports[-1]["train_seconds"]
    # starts at bicubic, so even 25 steps must not be worse than bicubic by more than noise; 75 beat it
    from lensearch.evaluation import baseline_metrics

    bicubic = baseline_metrics(tiny_h5, split="val", methods=("bicubic",))["methods"]["bicubic"]["psnr"]
    assert reports[-1]["val_psnr"] > bicubic + 0.5, (reports[-1]["val_psnr"], bicubic)


def test_untrained_start_scores_exactly_bicubic_and_gap_metrics(tiny_h5, tmp_path):
    from lensearch.evaluation import baseline_metrics

    base = baseline_metrics(tiny_h5, split="val", methods=("bicubic",))
    ref = {"bicubic_val_psnr": base["methods"]["bicubic"]["psnr"],
           "noise_ceiling_val_psnr": base["noise_ceiling"]["psnr"]}
    reports = _fit(tiny_h5, tmp_path, {"epochs": 1, "batch_size": 8, "patch_size": 32, "steps_per_epoch": 1},
                   lr=1e-12, reference=ref)
    # a zero tail: the model is bicubic (one step of a vanishing learning rate changes nothing measurable)
    assert reports[0]["val_psnr"] == pytest.approx(ref["bicubic_val_psnr"], abs=1e-4)
    gap = reports[0]["val_gap_closed"]
    expected = (reports[0]["val_psnr"] - ref["bicubic_val_psnr"]) / (ref["noise_ceiling_val_psnr"]
                                                                      - ref["bicubic_val_psnr"])
    assert gap == pytest.approx(expected) and abs(gap) < 1e-4
    assert gap_metrics({"val_psnr": 40.0}, {"bicubic_val_psnr": 30.0, "noise_ceiling_val_psnr": 50.0}) == \
        {"val_psnr_gain": 10.0, "val_gap_closed": 0.5}
    assert gap_metrics({"val_psnr": 40.0}, None) == {}


def test_time_limit_stops_after_the_first_report_past_it(tiny_h5, tmp_path):
    reports = _fit(tiny_h5, tmp_path, {"epochs": 5, "batch_size": 8, "patch_size": 32, "steps_per_epoch": 2,
                                       "time_limit_s": 1e-3})
    assert len(reports) == 1 and reports[0]["time_limit_reached"] == 1


def test_new_train_keys_are_validated():
    for key, bad in (("patch_size", -1), ("steps_per_epoch", -5), ("time_limit_s", -1.0)):
        with pytest.raises(UserError, match=rf"train.{key}: expected >= 0"):
            resolve_run_config({"train": {key: bad}})


def test_bicubic_reference_of_the_first_n_images_is_the_mean_over_exactly_those(tiny_h5):
    from lensearch.evaluation import baseline_metrics
    from lensearch.metrics import MetricSums

    got = baseline_metrics(tiny_h5, split="val", methods=("bicubic",), max_images=5)
    val = SRDataset(tiny_h5, split="val")
    sums = MetricSums()
    for i in range(5):
        item = val[i]
        up = F.interpolate(item["lr"][None], scale_factor=2, mode="bicubic", align_corners=False)
        sums.update(up, item["hr"][None])
    assert got["methods"]["bicubic"]["psnr"] == pytest.approx(sums.means()["psnr"], rel=1e-6)
    assert got["n"] == 5


def test_latency_is_measured_once_per_architecture_and_reused(tmp_path):
    import json

    from lensearch.models import registry
    from lensearch.training.loop import _latency

    cache_file = str(tmp_path / "latency.json")
    model = registry.build("espcn", scale=2, num_features=8, num_layers=3)
    first = _latency(model, "espcn", {"num_features": 8, "num_layers": 3}, (1, 1, 16, 16), cache_file)
    assert first > 0
    cache = json.loads((tmp_path / "latency.json").read_text())
    assert list(cache.values()) == [first]
    # a later trial of the same architecture gets the cached number, whatever its own timing would say
    key = next(iter(cache))
    (tmp_path / "latency.json").write_text(json.dumps({key: 123.0}))
    assert _latency(model, "espcn", {"num_features": 8, "num_layers": 3}, (1, 1, 16, 16), cache_file) == 123.0
    other = _latency(model, "espcn", {"num_features": 8, "num_layers": 4}, (1, 1, 16, 16), cache_file)
    assert other != 123.0 and len(json.loads((tmp_path / "latency.json").read_text())) == 2
