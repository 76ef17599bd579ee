"""The training loop without Ray (RunContext), plus configuration validation."""

from __future__ import annotations

import pytest
import torch

from helpers import skimage_psnr  # numpy + scikit-image PSNR, independent of lensearch.metrics

from lensearch.data.store import SRDataset, train_stats
from lensearch.data.transforms import build_normalization
from lensearch.errors import UserError
from lensearch.metrics import evaluate
from lensearch.models import registry
from lensearch.training.checkpoint import load_checkpoint
from lensearch.training.config import resolve_run_config
from lensearch.training.context import RunContext
from lensearch.training.loop import fit
from lensearch.training.runinfo import RunInfo
from lensearch.training.steps import NonFiniteLoss
from lensearch.training.validate import check_run_config

TINY_RDN = {"name": "rdn", "num_features": 8, "num_blocks": 1, "num_layers": 2, "growth": 8}


def _run(tiny_h5, tmp_path, **extra):
    return RunInfo(data_path=str(tiny_h5), dir=str(tmp_path), scale=2, has_clean=True, stats=train_stats(tiny_h5),
                   **extra)


def _val(tiny_h5):
    val = SRDataset(tiny_h5, split="val")
    return (torch.stack([val[i]["lr"] for i in range(len(val))]),
            torch.stack([val[i]["hr"] for i in range(len(val))]))


def _fit(config, run):
    reports = []
    fit(resolve_run_config(config), run, RunContext(torch.device("cpu"), report_fn=reports.append))
    return reports


def test_pixel_model_learns_reports_every_epoch_and_checkpoints(tiny_h5, tmp_path):
    config = {"model": TINY_RDN, "normalization": {"name": "asinh", "softening": 0.1},
              "optimizer": {"name": "adam", "lr": 2e-3}, "scheduler": {"name": "warmup_cosine"},
              "train": {"epochs": 4, "batch_size": 8}}
    reports = _fit(config, _run(tiny_h5, tmp_path, measure_latency=True))
    assert [r["epoch"] for r in reports] == [1, 2, 3, 4]
    for key in ("val_psnr", "val_ssim", "val_mse", "train_loss", "lr", "epoch_time_s", "images_per_s",
                "val_psnr_clean", "params", "flops", "latency_ms"):
        assert all(key in r for r in reports), key
    assert reports[-1]["train_loss"] < reports[0]["train_loss"]
    assert reports[-1]["val_psnr"] > reports[0]["val_psnr"]
    ckpt = load_checkpoint(tmp_path / "checkpoints" / "best.pt")
    assert ckpt["model_name"] == "rdn" and ckpt["normalization"]["name"] == "asinh"
    assert ckpt["best"] == max(r["val_psnr"] for r in reports)
    from PIL import Image

    with Image.open(tmp_path / "samples.png") as grid:  # 4 validation rows x 5 panels at 80 dpi (10 x 2.1 in)
        assert grid.format == "PNG" and grid.size == (800, round(80 * 2.1 * 4))
        assert len(grid.convert("RGB").getcolors(maxcolors=1 << 20)) > 100  # images, not a blank canvas


def test_reported_metrics_match_an_independent_evaluation_of_the_checkpoint(tiny_h5, tmp_path):
    reports = _fit({"model": TINY_RDN, "train": {"epochs": 1, "batch_size": 8}}, _run(tiny_h5, tmp_path))
    ckpt = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    model = registry.build("rdn", scale=2, **ckpt["model_params"])
    model.load_state_dict(ckpt["eval_model"])
    model.eval()
    norm = build_normalization(ckpt["normalization"])
    val = SRDataset(tiny_h5, split="val", with_clean=True)
    lr = torch.stack([val[i]["lr"] for i in range(len(val))])
    hr = torch.stack([val[i]["hr"] for i in range(len(val))])
    with torch.no_grad():
        sr = norm.invert(model(norm.apply(lr, lr)), lr)
    assert evaluate(sr, hr)["psnr"].mean().item() == pytest.approx(reports[-1]["val_psnr"], abs=1e-3)


def test_resume_continues_after_the_last_checkpoint(tiny_h5, tmp_path):
    config = {"model": TINY_RDN, "train": {"epochs": 2, "batch_size": 8}}
    first = _fit(config, _run(tiny_h5, tmp_path))
    assert [r["epoch"] for r in first] == [1, 2]
    config["train"]["epochs"] = 3
    again = _fit(config, _run(tiny_h5, tmp_path))
    assert [r["epoch"] for r in again] == [2, 3]  # the checkpointed epoch is re-reported first
    assert again[0]["val_psnr"] == first[-1]["val_psnr"]
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["epoch"] == 3


def test_gan_warmup_then_adversarial_training(tiny_h5, tmp_path):
    config = {"model": {"name": "esrgan", "num_blocks": 1, "num_features": 8, "growth": 4},
              "discriminator": {"base_channels": 8, "num_stages": 2},
              "loss": {"adv_weight": 1e-2, "adversarial": "ragan"},
              "train": {"epochs": 2, "batch_size": 8, "gan_warmup_epochs": 1, "ema_decay": 0.9}}
    reports = _fit(config, _run(tiny_h5, tmp_path))
    assert "train_d_loss" not in reports[0] and "train_d_loss" in reports[1]
    ckpt = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert ckpt["step"]["disc"] and ckpt["ema"] is not None
    # the reported val_psnr is the EMA model's, recomputed here with numpy + scikit-image
    model = registry.build("esrgan", scale=2, **ckpt["model_params"]).eval()
    model.load_state_dict(ckpt["eval_model"])
    lr, hr = _val(tiny_h5)
    norm = build_normalization(ckpt["normalization"])
    with torch.no_grad():
        sr = norm.invert(model(norm.apply(lr, lr)), lr)
    assert reports[-1]["val_psnr"] == pytest.approx(skimage_psnr(sr.numpy(), hr.numpy()), abs=1e-3)


def test_training_with_the_content_loss(tiny_h5, tmp_path):
    """No FeatureNet weights ship: make one, save it as the loss loads it, and train with it."""
    from lensearch.models.feature_net import FeatureNet, save_feature_net

    torch.manual_seed(0)
    save_feature_net(FeatureNet(base_channels=4, num_stages=2), tmp_path / "feature_net.pt")
    config = {"model": TINY_RDN, "normalization": {"name": "asinh", "softening": 0.1},
              "loss": {"content_weight": 0.5, "content_weights": str(tmp_path / "feature_net.pt")},
              "optimizer": {"name": "adam", "lr": 2e-3}, "train": {"epochs": 2, "batch_size": 8}}
    reports = _fit(config, _run(tiny_h5, tmp_path / "run"))
    assert all(r["train_content"] > 0 for r in reports)
    assert reports[-1]["train_loss"] < reports[0]["train_loss"]


def test_diverging_loss_fails_naming_epoch_and_step(tiny_h5, tmp_path):
    config = {"model": TINY_RDN, "optimizer": {"name": "sgd", "lr": 1e30, "momentum": 0.0},
              "train": {"epochs": 2, "batch_size": 8}}
    with pytest.raises(NonFiniteLoss, match=r"epoch 1, step \d+"):
        _fit(config, _run(tiny_h5, tmp_path))


@pytest.mark.parametrize("config, message", [
    ({"train": {"epochs": 0}}, "train.epochs: expected >= 1"),
    ({"train": {"batch_size": "big"}}, "train.batch_size: expected an integer"),
    ({"train": {"monitor": "val_fid"}}, "train.monitor: expected one of"),
    ({"train": {"learning_rate": 1}}, "train.learning_rate: unknown key"),
    ({"model": {"name": "edsr"}}, "unknown model 'edsr'"),
    ({"model": {"name": "rdn", "blocks": 3}}, "model.rdn.blocks"),
    ({"optimizer": {"name": "lamb"}}, "optimizer.name: expected one of"),
    ({"optimizer": {"name": "adam", "momentum": 0.9}}, "optimizer.momentum: unknown parameter"),
    ({"scheduler": {"name": "cosine", "gamma": 0.1}}, "scheduler.gamma: unknown parameter"),
    ({"normalization": {"name": "log10"}}, "normalization.name"),
    ({"model": {"name": "esrgan"}, "discriminator": {"channels": 8}}, "discriminator.vgg_style.channels"),
    ({"unknown": {}}, "unknown section"),
])
def test_bad_run_configurations_name_the_key(config, message):
    with pytest.raises(UserError, match=message):
        check_run_config(config)


def test_the_sample_grid_is_drawn_where_the_run_may_end(monkeypatch):
    """GridSchedule: every improving epoch without known stopping epochs; else at those epochs, the last one,
    the time limit and at least every GRID_INTERVAL_S seconds."""
    from lensearch.training import loop

    anywhere = loop.GridSchedule(None)
    assert all(anywhere.due(e, 9, False) for e in range(1, 10))
    clock = [100.0]
    monkeypatch.setattr(loop.time, "perf_counter", lambda: clock[0])
    asha = loop.GridSchedule([1, 3])
    assert [e for e in range(1, 10) if asha.due(e, 9, False)] == [1, 3, 9]
    assert asha.due(5, 9, True)  # this epoch hit the time limit
    clock[0] += loop.GRID_INTERVAL_S
    assert asha.due(6, 9, False) and not asha.due(7, 9, False)
    assert [e for e in range(1, 4) if loop.GridSchedule([]).due(e, 3, False)] == [3]
