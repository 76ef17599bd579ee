import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lensearch.cli import main
from lensearch.data.baseline import upsample
from lensearch.evaluation import baseline_metrics
from lensearch.data.store import write_h5
from lensearch.metrics import evaluate


def _file(tmp_path, clean=True, n=20):
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:32, :32] / 32
    hr_clean = np.stack([np.sin(6 * xx + p) * np.cos(4 * yy) for p in rng.random(n)])[:, None].astype(np.float32)
    hr = hr_clean + 0.05 * rng.standard_normal(hr_clean.shape).astype(np.float32)
    lr = hr_clean.reshape(n, 1, 16, 2, 16, 2).mean(axis=(3, 5))
    path = write_h5(tmp_path / "b.h5", hr=hr, lr=lr, hr_clean=hr_clean if clean else None)
    return path, hr, lr, hr_clean


def test_baseline_metrics_match_direct_computation(tmp_path):
    path, hr, lr, hr_clean = _file(tmp_path)
    res = baseline_metrics(path, split="all", batch_size=6)
    assert res["n"] == 20 and res["scale"] == 2 and set(res["methods"]) == {"bicubic", "bilinear", "nearest"}
    up = F.interpolate(torch.from_numpy(lr), scale_factor=2, mode="bicubic", align_corners=False)
    want = evaluate(up, torch.from_numpy(hr))
    got = res["methods"]["bicubic"]
    for k in ("psnr", "ssim", "mse"):
        assert got[k] == pytest.approx(float(want[k].double().mean()), rel=1e-5)
    ceiling = evaluate(torch.from_numpy(hr_clean), torch.from_numpy(hr))
    assert res["noise_ceiling"]["psnr"] == pytest.approx(float(ceiling["psnr"].double().mean()), rel=1e-5)
    # smooth images: bicubic beats nearest, and nothing beats the ceiling
    assert got["psnr_clean"] > res["methods"]["nearest"]["psnr_clean"]
    assert res["noise_ceiling"]["psnr"] > max(m["psnr"] for m in res["methods"].values())


def test_upsample_shapes_non_square():
    x = torch.rand(2, 1, 5, 7)
    assert upsample(x, (15, 21), "nearest").shape == (2, 1, 15, 21)
    # antialias leaves bilinear upsampling alone but switches the bicubic kernel (a=-0.75 -> a=-0.5, PIL)
    assert torch.allclose(F.interpolate(x, size=(10, 14), mode="bilinear", antialias=True, align_corners=False),
                          upsample(x, (10, 14), "bilinear"), atol=1e-6)
    assert not torch.allclose(upsample(x, (10, 14), "bicubic-pil"), upsample(x, (10, 14)), atol=1e-3)
    # 2x bicubic, output pixel 5 sits at source 2.25: Keys weights with a = -0.75 over pixels 1..4
    t = np.array([1.25, 0.25, 0.75, 1.75])
    a = -0.75
    wts = np.where(t <= 1, (a + 2) * t**3 - (a + 3) * t**2 + 1, a * t**3 - 5 * a * t**2 + 8 * a * t - 4 * a)
    row = torch.rand(1, 1, 1, 8, dtype=torch.float64)
    assert upsample(row, (1, 16))[0, 0, 0, 5].item() == pytest.approx(float(wts @ row[0, 0, 0, 1:5].numpy()))


def test_cli_table_and_json(tmp_path, capsys):
    path = _file(tmp_path, clean=False)[0]
    assert main(["baseline", str(path), "--methods", "bicubic,nearest", "--split", "all"]) == 0
    out = capsys.readouterr().out
    assert "bicubic" in out and "nearest" in out and "bilinear" not in out and "ceiling" not in out
    assert main(["baseline", str(path), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["noise_ceiling"] is None and res["split"] == "test" and "psnr_clean" not in res["methods"]["bicubic"]


def test_cli_bad_input(tmp_path, capsys):
    path = _file(tmp_path, clean=False)[0]
    assert main(["baseline", str(path), "--methods", "lanczos"]) == 2
    assert "--methods" in capsys.readouterr().err
    assert main(["baseline", str(tmp_path / "nope.h5")]) == 2
    assert "nope.h5: no such file" in capsys.readouterr().err
