"""Training steps in isolation: the GAN step's discriminator views and scalers, the discriminator's lr
schedule, and the diffusion validation loss."""

from __future__ import annotations

import copy

import pytest
import torch

from lensearch.models import registry
from lensearch.training.config import resolve_run_config
from lensearch.training.context import RunContext
from lensearch.training.losses import AdversarialLoss, build_generator_loss
from lensearch.training.optim import build_schedules
from lensearch.training.steps import Amp, DiffusionStep, GanStep

CPU = torch.device("cpu")
pytestmark = pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\(\)`")


def _gan_step(norm="batch", **train):
    torch.manual_seed(0)
    config = resolve_run_config({"optimizer": {"name": "adam", "lr": 1e-3},
                                 "train": {"gan_warmup_epochs": 0, "d_lr_factor": 0.5, **train}})
    gen = registry.build("esrgan", scale=2, num_blocks=1, num_features=8, growth=4)
    disc = registry.build_discriminator("vgg_style", base_channels=8, num_stages=2, norm=norm)
    loss = build_generator_loss({"adv_weight": 1e-2})
    return GanStep(RunContext(CPU), gen, config, loss, Amp("off", CPU), discriminator=disc,
                   adversarial=AdversarialLoss("ragan")), config


def _batch(n=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 16, 16, generator=g), torch.rand(n, 1, 32, 32, generator=g)


@pytest.mark.parametrize("norm", ["batch", "spectral", "none"])
def test_generator_and_discriminator_steps_see_the_same_discriminator(norm):
    """Both steps run D once over cat([hr, sr]): the same inputs give the same logits (with batch norm in
    train mode, separate real-only / fake-only forwards would not)."""
    step, _ = _gan_step(norm)
    calls = []
    step.discriminator.register_forward_hook(lambda m, inp, out: calls.append((inp[0].detach(), out.detach())))
    lr, hr = _batch()
    step.train_batch(lr, hr, epoch=1, step=0)
    assert len(calls) == 2, "one discriminator forward per step"
    (x_g, logits_g), (x_d, logits_d) = calls
    torch.testing.assert_close(x_g, x_d)           # same batch composition: [hr, sr]
    torch.testing.assert_close(x_g[: len(hr)], hr)
    torch.testing.assert_close(logits_g, logits_d)  # hence the same logits


def test_generator_step_leaves_the_discriminator_untouched():
    step, _ = _gan_step("batch")
    disc = step.discriminator
    lr, hr = _batch()
    before = copy.deepcopy(disc.state_dict())
    with torch.no_grad():
        sr = step.g(lr)
    real, fake = step.d_logits(hr, sr, frozen=True)
    for key, value in disc.state_dict().items():  # running stats included
        torch.testing.assert_close(value, before[key], msg=key)
    assert all(p.requires_grad for p in disc.parameters())
    step.train_batch(lr, hr, epoch=1, step=0)
    bn = [m for m in disc.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bn and all(int(m.num_batches_tracked) == 1 for m in bn)  # only the D step updated them


def test_each_grad_scaler_is_updated_once_per_iteration(monkeypatch):
    counts: dict[int, int] = {}
    original = torch.amp.GradScaler.update

    def counting(self, *args, **kwargs):
        counts[id(self)] = counts.get(id(self), 0) + 1
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.amp.GradScaler, "update", counting)
    step, _ = _gan_step()
    lr, hr = _batch()
    step.train_batch(lr, hr, epoch=1, step=0)
    assert len(counts) == 2 and set(counts.values()) == {1}, counts
    assert "scaler_d" in step.state_dict()


def test_the_discriminator_learning_rate_is_scheduled_with_the_generator():
    step, config = _gan_step(d_lr_factor=0.5)
    assert step.opt_d in step.optimizers
    cosine = build_schedules(step.optimizers, {"name": "cosine", "min_lr_ratio": 0.1}, epochs=2,
                             steps_per_epoch=5, mode="max")
    for _ in range(7):
        cosine.step_batch()
    g_lr, d_lr = step.opt_g.param_groups[0]["lr"], step.opt_d.param_groups[0]["lr"]
    assert g_lr < 1e-3 and d_lr == pytest.approx(0.5 * g_lr)
    state = cosine.state_dict()
    assert len(state) == 2

    step, _ = _gan_step()
    epochs = build_schedules(step.optimizers, {"name": "step", "step_epochs": 1, "gamma": 0.1}, epochs=3,
                             steps_per_epoch=5, mode="max")
    epochs.step_epoch(30.0)
    assert step.opt_d.param_groups[0]["lr"] == pytest.approx(0.5 * 1e-3 * 0.1)
    epochs.load_state_dict(state)  # round trip; an old single-schedule state loads into the generator's
    epochs.load_state_dict(state[0])


def _diffusion_step():
    torch.manual_seed(0)
    config = resolve_run_config({"model": {"name": "diffusion"}})
    gen = registry.build("diffusion", scale=2, base_channels=8, channel_mults="1", timesteps=20, sample_steps=2)
    return DiffusionStep(RunContext(CPU), gen, config, build_generator_loss({}), Amp("off", CPU))


def test_diffusion_val_loss_is_deterministic_and_scores_the_evaluated_weights():
    step = _diffusion_step()
    ema = torch.optim.swa_utils.AveragedModel(step.generator)
    torch.nn.init.normal_(ema.module.unet.out[-1].weight, std=0.1)  # the evaluated weights differ
    lr, hr = _batch(seed=2)
    rng = torch.get_rng_state()
    first = step.val_loss(lr, hr, None, model=ema.module)
    again = step.val_loss(lr, hr, None, model=ema.module)
    assert torch.equal(first, again)                     # fixed noise and timesteps
    assert torch.equal(torch.get_rng_state(), rng)       # and the training RNG is not consumed
    assert torch.equal(step.val_loss(lr, hr, None, model=ema), first)  # the AveragedModel itself works too
    want = ema.module.training_loss(lr, hr, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(first, want)
    assert not torch.allclose(step.val_loss(lr, hr, None), first)  # the raw generator scores differently


def test_every_model_kind_has_one_registered_step():
    from lensearch.models import registry
    from lensearch.models.registry import KINDS
    from lensearch.training.steps import STEPS

    assert set(STEPS) == set(KINDS)
    assert {registry.get(n).kind for n in registry.names()} <= set(STEPS)
