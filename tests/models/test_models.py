"""The model zoo: every registered model on odd sizes, gradients, determinism, export; registry errors; cost."""

from __future__ import annotations

import argparse
import logging
import warnings

import numpy as np
import pytest
import torch

from lensearch.cli import models as models_cli
from lensearch.errors import UserError
from lensearch.models import cost, registry
from lensearch.models.common import bicubic
from lensearch.models.registry import KINDS, ModelSpec, Param, Registry

# Tiny configurations so the whole file runs in well under a minute on 2 CPU cores.
TINY = {
    "rdn": dict(num_features=8, num_blocks=2, num_layers=2, growth=4),
    "srresnet": dict(num_blocks=2, num_features=8),
    "srgan": dict(num_blocks=2, num_features=8, batch_norm=True),
    "rrdb": dict(num_blocks=1, num_features=8, growth=4),
    "esrgan": dict(num_blocks=1, num_features=8, growth=4),
    "swinir": dict(embed_dim=8, num_groups=1, depth=2, num_heads=2, window_size=4),
    "diffusion": dict(base_channels=8, timesteps=20, sample_steps=1),
    "espcn": dict(num_features=8, num_layers=3, activation="prelu"),
    "span": dict(num_features=8, num_blocks=2),
}
NAMES = registry.names()
PIXEL_NAMES = [n for n in NAMES if registry.get(n).kind in ("pixel", "gan")]


def make(name: str, scale: int = 2, seed: int = 0, perturb: bool = True, **extra) -> torch.nn.Module:
    """Tiny model ``name``, seeded. ``perturb``: re-draw the zero-initialised output conv of pixel/GAN models
    (default PyTorch init, same seed), so shape, determinism and export checks see the whole network
    rather than an untrained model whose output is exactly bicubic."""
    torch.manual_seed(seed)
    model = registry.build(name, scale=scale, **{**TINY.get(name, {}), **extra})
    if perturb and registry.get(name).kind in ("pixel", "gan"):
        for m in model.modules():
            if isinstance(m, torch.nn.Conv2d) and not m.weight.any():
                m.reset_parameters()
    return model


def test_every_model_has_a_tiny_config():
    assert set(NAMES) - {"bicubic"} == set(TINY)


@pytest.mark.parametrize("scale", [2, 4])
@pytest.mark.parametrize("name", NAMES)
def test_output_shape_on_odd_input(name, scale):
    with torch.no_grad():
        out = make(name, scale).eval()(torch.rand(2, 1, 13, 11))
    assert out.shape == (2, 1, 13 * scale, 11 * scale)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", NAMES)
def test_in_channels(name):
    with torch.no_grad():
        out = make(name, in_channels=3).eval()(torch.rand(1, 3, 9, 10))
    assert out.shape == (1, 3, 18, 20)


@pytest.mark.parametrize("name", NAMES)
def test_backward(name):
    model, spec = make(name), registry.get(name)
    if spec.kind == "interp":
        assert cost.count_params(model) == 0
        return
    lr, hr = torch.rand(2, 1, 13, 11), torch.rand(2, 1, 26, 22)
    loss = model.training_loss(lr, hr) if spec.kind == "diffusion" else (model(lr) - hr).abs().mean()
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert grads and all(g is not None for g in grads.values()), [n for n, g in grads.items() if g is None]
    assert any(g.abs().sum() > 0 for g in grads.values())


@pytest.mark.parametrize("name", NAMES)
def test_seeded_determinism(name):
    x = torch.rand(2, 1, 13, 11)
    a, b, c = make(name, seed=3), make(name, seed=3), make(name, seed=4)
    with torch.no_grad():
        assert torch.equal(a.eval()(x), b.eval()(x))
        if name in PIXEL_NAMES:
            assert not torch.equal(a.eval()(x), c.eval()(x))
    if registry.get(name).kind != "interp":
        assert any(not torch.equal(p, q) for p, q in zip(a.parameters(), c.parameters()))


@pytest.mark.parametrize("scale", [2, 4])
@pytest.mark.parametrize("name", PIXEL_NAMES)
def test_untrained_model_is_exactly_bicubic_and_trains_off_it(name, scale):
    """bicubic_skip + zero-initialised last conv: the untrained output is bicubic(lr); one L1 step moves it,
    and from the second step on every parameter, the body's included, gets a gradient."""
    model = make(name, scale, perturb=False)
    x, hr = torch.rand(2, 1, 13, 11), torch.rand(2, 1, 13 * scale, 11 * scale)
    want = bicubic(x, scale)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), want, atol=1e-6, rtol=0)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for step in (1, 2):
        opt.zero_grad()
        (model(x) - hr).abs().mean().backward()
        if step == 1:
            opt.step()
            with torch.no_grad():
                assert (model.eval()(x) - want).abs().max() > 1e-4, "one step left the output at bicubic"
            model.train()
    zero = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert not zero, f"no gradient on step 2 for {zero}"


def _onnx_outputs(model: torch.nn.Module, example: torch.Tensor, inputs: list[torch.Tensor], path) -> list:
    import onnxruntime as ort

    dyn = torch.export.Dim.DYNAMIC
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.disable(logging.WARNING)
        try:
            program = torch.onnx.export(model, (example,), dynamo=True, verbose=False,
                                        dynamic_shapes=({0: dyn, 2: dyn, 3: dyn},))
        finally:
            logging.disable(logging.NOTSET)
    program.save(str(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = session.get_inputs()[0].name
    return [session.run(None, {feed: x.numpy()})[0] for x in inputs]


def _check_export(model, tmp_path):
    example = torch.rand(2, 1, 13, 11)
    others = [example, torch.rand(1, 1, 9, 16), torch.rand(3, 1, 3, 5)]  # 3x5: smaller than a window
    with torch.no_grad():
        want = [model(x).numpy() for x in others]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(model, example, check_trace=False)
        for x, w in zip(others, want):  # the trace follows the input size too
            np.testing.assert_allclose(traced(x).numpy(), w, atol=1e-5)
    for got, w in zip(_onnx_outputs(model, example, others, tmp_path / "model.onnx"), want):
        np.testing.assert_allclose(got, w, atol=1e-4)


# One export check per architecture: models sharing a build function (srgan/srresnet, esrgan/rrdb) share it.
EXPORT_NAMES = sorted({registry.get(n).build: n for n in NAMES}.values())


@pytest.mark.parametrize("name", EXPORT_NAMES)
def test_export_trace_and_onnx(name, tmp_path):
    """TorchScript trace and ONNX (dynamic N/H/W) match eager for every registered model."""
    assert not registry.get(name).export_notes, (
        f"{name} declares export_notes: give it its own test showing the documented export limitation")
    _check_export(make(name).eval(), tmp_path)


@pytest.mark.parametrize("name", registry.discriminator_names())
@pytest.mark.parametrize("norm", ["batch", "spectral", "none"])
def test_discriminator_any_patch_size(name, norm):
    torch.manual_seed(0)
    disc = registry.build_discriminator(name, base_channels=4, num_stages=3, norm=norm)
    for size in (7, 24, 41):
        logits = disc(torch.rand(2, 1, size, size + 3))
        assert logits.shape == (2,)
        logits.sum().backward()
    assert all(p.grad is not None for p in disc.parameters())


# --- registry errors and coercion -----------------------------------------------------------------------


def test_unknown_model_lists_valid_names():
    with pytest.raises(UserError) as err:
        registry.get("nope")
    assert all(n in str(err.value) for n in NAMES)


def test_unknown_hparam_lists_valid_keys():
    with pytest.raises(UserError, match=r"model\.rdn\.nope: .*num_features, num_blocks, num_layers, growth"):
        registry.build("rdn", nope=1)
    with pytest.raises(UserError, match=r"model\.bicubic\.scale_mode: .*none"):
        registry.resolve_params("bicubic", {"scale_mode": 1})


@pytest.mark.parametrize("value", ["abc", 2.5, True, 0, None])
def test_bad_value(value):
    with pytest.raises(UserError, match=r"model\.rdn\.num_features: expected int in \[4, 256\], got"):
        registry.resolve_params("rdn", {"num_features": value})


def test_choices_and_coercion():
    with pytest.raises(UserError, match=r"model\.diffusion\.schedule: expected one of 'linear', 'cosine'"):
        registry.resolve_params("diffusion", {"schedule": "quadratic"})
    got = registry.resolve_params("srresnet", {"num_features": "16", "num_blocks": 4.0, "batch_norm": "true"})
    assert got == {"num_blocks": 4, "num_features": 16, "batch_norm": True, "bicubic_skip": True}
    assert registry.resolve_params("esrgan", {"res_scale": 1})["res_scale"] == 1.0


def test_discriminator_registry_errors():
    with pytest.raises(UserError, match="unknown discriminator 'x'; valid: vgg_style"):
        registry.build_discriminator("x")
    with pytest.raises(UserError, match=r"discriminator\.vgg_style\.norm: expected one of"):
        registry.build_discriminator("vgg_style", norm="layer")


def test_spec_validation_and_cross_param_errors():
    reg = Registry("model", KINDS)
    spec = ModelSpec("m", "pixel", torch.nn.Identity, (Param("k", int, 1, "k"),), "m")
    reg.register(spec)
    with pytest.raises(ValueError, match="twice"):
        reg.register(spec)
    with pytest.raises(ValueError, match="discriminator"):
        reg.register(ModelSpec("g", "gan", torch.nn.Identity, (), "g"))
    with pytest.raises(UserError, match="scale: expected one of 2, 3, 4, 8, got 5"):
        registry.build("rdn", scale=5)
    with pytest.raises(UserError, match=r"model\.swinir\.num_heads: expected a divisor of embed_dim"):
        registry.build("swinir", embed_dim=10, num_heads=4)
    with pytest.raises(UserError, match=r"model\.diffusion\.sample_steps: expected 1\.\.timesteps \(20\)"):
        registry.build("diffusion", timesteps=20, sample_steps=21)


# --- model-specific behaviour ---------------------------------------------------------------------------


def test_bicubic_skip():
    x = torch.rand(1, 1, 13, 11)
    with torch.no_grad():
        base = registry.build("bicubic")(x)
        skip, plain = make("rdn"), make("rdn", bicubic_skip=False)
        plain.load_state_dict(skip.state_dict())
        assert torch.allclose(skip(x) - plain(x), base, atol=1e-6)


def test_diffusion_sampling_is_fixed_and_batch_independent():
    model = make("diffusion", sample_steps=2).eval()
    for p in model.unet.out[-1].parameters():  # leave the zero init so samples depend on the noise
        torch.nn.init.normal_(p, std=0.1)
    x = torch.rand(3, 1, 13, 11)
    with torch.no_grad():
        torch.manual_seed(1)
        a = model(x)
        torch.manual_seed(2)
        b = model(x)
        first = model(x[:1])
        model.sample_steps = 5
        c = model(x)
    assert torch.equal(a, b)
    assert torch.allclose(first, a[:1], atol=1e-4)  # DDIM's first step amplifies float noise
    assert model.sample_steps == 5 and not torch.allclose(a, c)


@pytest.mark.parametrize("scale", [2, 4])
def test_untrained_diffusion_samples_exactly_bicubic_and_trains_off_it(scale):
    """x0 prediction with the zero-initialised last conv: every DDIM step predicts a zero residual, so the
    untrained sample is bicubic(lr); one step of the denoising objective moves it. An untrained eps model
    (SR3's parameterisation) is far from bicubic: its x0 estimate at the noisiest step is x / sqrt(alpha_bar)."""
    x, hr = torch.rand(2, 1, 13, 11), torch.rand(2, 1, 13 * scale, 11 * scale)
    want = bicubic(x, scale)
    model = make("diffusion", scale, sample_steps=3)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), want, atol=1e-6, rtol=0)
        eps_model = make("diffusion", scale, sample_steps=3, prediction="eps").eval()
        assert (eps_model(x) - want).abs().max() > 0.05
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    opt.zero_grad()
    model.training_loss(x, hr).backward()
    opt.step()
    with torch.no_grad():
        assert (model.eval()(x) - want).abs().max() > 1e-4, "one step left the sample at bicubic"


# --- cost helpers and CLI -------------------------------------------------------------------------------


def test_flops_of_a_conv_match_hand_count():
    conv = torch.nn.Conv2d(1, 8, 3, padding=1, bias=False)
    assert cost.estimate_flops(conv, (1, 1, 16, 16)) == 2 * 8 * 9 * 16 * 16


@pytest.mark.parametrize("name", NAMES)
def test_model_cost(name):
    model = make(name).train()
    c = cost.model_cost(model, (1, 1, 16, 16), repeats=2)
    assert set(c) == {"params", "flops", "latency_ms"} and c["latency_ms"] > 0
    assert model.training  # mode restored
    if registry.get(name).kind != "interp":
        assert c["params"] > 0 and c["flops"] > 0


def _cli(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    models_cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    assert args.func(args) == 0


def test_cli_list_and_show(capsys):
    _cli(["models", "list"])
    out = capsys.readouterr().out
    assert all(n in out for n in NAMES)
    _cli(["models", "show", "srgan", "--lr-size", "12", "--set", "num_blocks=1", "--set", "num_features=8"])
    out = capsys.readouterr().out
    assert "num_features" in out and "vgg_style" in out and "GFLOPs" in out
    with pytest.raises(UserError, match="--set: expected KEY=VALUE"):
        _cli(["models", "show", "rdn", "--set", "num_blocks"])


@pytest.mark.parametrize("name", registry.names())
def test_every_model_refuses_an_unsupported_scale_with_a_user_error(name):
    with pytest.raises(UserError, match="scale: expected one of"):
        registry.build(name, scale=5)


@pytest.mark.parametrize("name", [n for n in registry.names()])
def test_declared_capabilities_hold_min_side_and_precisions(name):
    """What a spec says it accepts (smallest side, size multiple, precisions) is what the network accepts:
    export and upscale rely on it instead of a global limit."""
    spec = registry.get(name)
    net = registry.build(name, scale=2).eval()
    side = spec.min_side
    shapes = [(side, side + spec.size_multiple), (side + 7 * spec.size_multiple, side + 2 * spec.size_multiple)]
    dtypes = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
    for precision in spec.precisions:
        for h, w in shapes:
            x = torch.rand(1, 1, h, w)
            with torch.no_grad(), torch.autocast("cpu", dtype=dtypes[precision],
                                                 enabled=dtypes[precision] is not None):
                y = net(x).float()
            assert y.shape == (1, 1, 2 * h, 2 * w) and torch.isfinite(y).all(), (precision, h, w)
