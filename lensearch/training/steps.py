"""One training step per kind of model, found by the model spec's ``kind``.

- ``pixel``: generator trained with the pixel/SSIM/content losses of :mod:`lensearch.training.losses`.
- ``gan``: the same generator loss plus an adversarial term; optional PSNR-oriented warm-up epochs, then
  alternating generator / discriminator updates with their own optimizers.
- ``diffusion``: the model's own denoising objective (``model.training_loss(lr, hr)``); evaluation calls
  ``model(lr)``, which samples with the model's configured number of steps. Its ``val_loss`` is that
  objective for the evaluated weights at fixed (seeded) timesteps and noise.
- ``interp``: nothing to train (bicubic and friends); only evaluated.

All steps see images already normalised; they return plain floats for logging.

Adding a kind is adding one :class:`Step` subclass registered with ``@register_step("kind")``: its
:meth:`Step.create` builds what the kind needs beyond the generator (a GAN's discriminator) and its
:meth:`Step.check` validates the configuration sections only that kind reads. The training loop and the
configuration check ask the registry; neither names a kind.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from lensearch.models import registry
from lensearch.training.context import RunContext, unwrap
from lensearch.training.losses import AdversarialLoss
from lensearch.training.optim import build_optimizer


VAL_LOSS_SEED = 0  # seed of the timesteps and noise of the diffusion validation loss

STEPS: dict[str, type["Step"]] = {}  # model kind -> its step class


def register_step(kind: str):
    """Class decorator: the step class of models of ``kind`` (one per kind)."""
    def add(cls):
        if kind in STEPS:
            raise ValueError(f"a step for kind {kind!r} is registered twice")
        STEPS[kind] = cls
        return cls
    return add


class NonFiniteLoss(RuntimeError):
    """Training diverged (NaN/inf loss). The message names the epoch and step."""


def _check_finite(loss: torch.Tensor, epoch: int, step: int) -> None:
    if not torch.isfinite(loss).all():
        raise NonFiniteLoss(f"non-finite loss ({loss.item()}) at epoch {epoch}, step {step}: training diverged "
                            "(lower the learning rate, enable gradient clipping, or change normalization)")


class _LossModule(torch.nn.Module):
    """Wraps a model's ``training_loss`` in ``forward`` so DDP sees (and synchronises) the call."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, lr, hr):
        return self.model.training_loss(lr, hr)


class Step:
    """Base: holds the generator and its optimizer; subclasses define ``train_batch``."""

    trainable = True

    def __init__(self, ctx: RunContext, generator: torch.nn.Module, cfg: dict[str, Any], gen_loss, amp):
        self.ctx, self.cfg, self.gen_loss, self.amp = ctx, cfg, gen_loss, amp
        self.generator = generator
        self.g = ctx.wrap(generator) if self.trainable else generator.to(ctx.device)
        params = [p for p in generator.parameters() if p.requires_grad]
        self.opt_g = build_optimizer(params, cfg["optimizer"]) if self.trainable and params else None
        self.scaler = torch.amp.GradScaler("cuda", enabled=amp.dtype == torch.float16)
        self.clip = cfg["train"]["grad_clip"]

    @classmethod
    def create(cls, ctx: RunContext, generator: torch.nn.Module, cfg: dict[str, Any], gen_loss, amp, *,
               spec, in_channels: int = 1) -> "Step":
        """The step for a run of a model of ``spec`` (what this kind needs beyond the generator is built here)."""
        return cls(ctx, generator, cfg, gen_loss, amp)

    @classmethod
    def check(cls, spec, cfg: dict[str, Any], gen_loss) -> None:
        """Validate the configuration sections only this kind reads (errors carry their key paths)."""

    @property
    def optimizers(self) -> list[torch.optim.Optimizer]:
        return [self.opt_g] if self.opt_g else []

    def _update(self, loss: torch.Tensor, opt: torch.optim.Optimizer, params,
                scaler: torch.amp.GradScaler | None = None) -> None:
        """Backward, clip, step and update ``scaler`` (default: the generator's). Each optimizer has its own
        scaler, so every scaler is updated exactly once per iteration."""
        scaler = scaler or self.scaler
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if self.clip > 0:
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(params, self.clip)
        scaler.step(opt)
        scaler.update()

    def train_batch(self, lr, hr, epoch: int, step: int) -> dict[str, float]:
        raise NotImplementedError

    def val_loss(self, lr, hr, sr, model: torch.nn.Module | None = None) -> torch.Tensor:
        """Per-batch validation loss (the generator's pixel-side objective) of ``sr``, the output of ``model``
        (the weights being evaluated, e.g. the EMA model; default: the trained generator)."""
        total, _ = self.gen_loss(sr, hr)
        return total

    def state_dict(self) -> dict:
        return {"opt_g": self.opt_g.state_dict() if self.opt_g else None, "scaler": self.scaler.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if self.opt_g and state.get("opt_g"):
            self.opt_g.load_state_dict(state["opt_g"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])


@register_step("interp")
class InterpStep(Step):
    trainable = False

    def train_batch(self, lr, hr, epoch, step):
        return {}


@register_step("pixel")
class PixelStep(Step):
    def train_batch(self, lr, hr, epoch, step):
        with self.amp.autocast():
            sr = self.g(lr)
            loss, parts = self.gen_loss(sr.float(), hr)
        _check_finite(loss, epoch, step)
        self._update(loss, self.opt_g, self.generator.parameters())
        return {"train_loss": loss.item(), **{f"train_{k}": float(v) for k, v in parts.items()}}


@register_step("gan")
class GanStep(Step):
    """Generator + discriminator. ``cfg["discriminator"]`` holds the discriminator's hyperparameters.

    The generator is scored by the same discriminator function the discriminator step trains: both steps
    run D once over ``cat([hr, sr])`` in train mode, so a batch-norm discriminator normalises the same
    mixed real+fake batch in both (separate real-only / fake-only forwards would give the generator a
    different D). In the generator step D's parameters are frozen and its batch-norm running statistics
    are left untouched; the real logits are detached (as in ESRGAN).

    Each optimizer has its own :class:`torch.amp.GradScaler` (``scaler`` for G, ``scaler_d`` for D), each
    updated once per iteration. ``opt_d`` is in :attr:`optimizers`, so a scheduler built over all of them
    (:func:`lensearch.training.optim.build_schedules`) schedules the discriminator's learning rate too.
    """

    def __init__(self, ctx, generator, cfg, gen_loss, amp, *, discriminator: torch.nn.Module, adversarial):
        super().__init__(ctx, generator, cfg, gen_loss, amp)
        self.discriminator = discriminator
        self.d = ctx.wrap(discriminator)
        self.opt_d = build_optimizer(discriminator.parameters(), cfg["optimizer"],
                                     lr_factor=cfg["train"]["d_lr_factor"])
        self.scaler_d = torch.amp.GradScaler("cuda", enabled=amp.dtype == torch.float16)
        self.adv = adversarial
        self.adv_weight = gen_loss.adv_weight
        self.warmup = cfg["train"]["gan_warmup_epochs"]

    @classmethod
    def create(cls, ctx, generator, cfg, gen_loss, amp, *, spec, in_channels=1):
        disc = registry.build_discriminator(spec.discriminator, in_channels=in_channels, **cfg["discriminator"])
        return cls(ctx, generator, cfg, gen_loss, amp, discriminator=disc,
                   adversarial=AdversarialLoss(gen_loss.adversarial))

    @classmethod
    def check(cls, spec, cfg, gen_loss):
        # only GANs read these sections (a space may mix GANs and CNNs: elsewhere they are inactive)
        registry.resolve_discriminator_params(spec.discriminator, cfg["discriminator"])
        AdversarialLoss(gen_loss.adversarial)

    @property
    def optimizers(self):
        return [self.opt_g, self.opt_d]

    def d_logits(self, hr: torch.Tensor, sr: torch.Tensor, *, frozen: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """(real, fake) logits from one discriminator forward over ``cat([hr, sr])``.

        ``frozen``: the generator step's view, through the unwrapped D (no DDP bookkeeping), with D's
        parameters not requiring gradients and its buffers (batch-norm running statistics) restored after.
        """
        if not frozen:
            with self.amp.autocast():
                logits = self.d(torch.cat([hr, sr])).float()
            return logits.chunk(2)
        d_plain = unwrap(self.d)
        # Batch norm still normalises with the batch's statistics (train mode) but leaves its running
        # statistics alone; other buffers (spectral norm's power-iteration vectors) are put back afterwards,
        # so the D step starts from exactly the state this forward saw.
        norms = [m for m in d_plain.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
                 and m.track_running_stats]
        saved = [b.detach().clone() for b in d_plain.buffers()]
        d_plain.requires_grad_(False)
        for m in norms:
            m.track_running_stats = False
        try:
            with self.amp.autocast():
                logits = d_plain(torch.cat([hr, sr])).float()
        finally:
            d_plain.requires_grad_(True)
            for m in norms:
                m.track_running_stats = True
            with torch.no_grad():
                for b, old in zip(d_plain.buffers(), saved):
                    if not torch.equal(b, old):
                        b.copy_(old)
        return logits.chunk(2)

    def train_batch(self, lr, hr, epoch, step):
        with self.amp.autocast():
            sr = self.g(lr)
            loss, parts = self.gen_loss(sr.float(), hr)
        out = {f"train_{k}": float(v) for k, v in parts.items()}
        if epoch <= self.warmup:                      # PSNR-oriented warm-up
            _check_finite(loss, epoch, step)
            self._update(loss, self.opt_g, self.generator.parameters())
            return {"train_loss": loss.item(), **out}
        # Generator update: the same batch composition as the D step below, D frozen.
        real, fake = self.d_logits(hr, sr, frozen=True)
        g_adv = self.adv.g_loss(real.detach(), fake)
        g_total = loss + self.adv_weight * g_adv
        _check_finite(g_total, epoch, step)
        self._update(g_total, self.opt_g, self.generator.parameters())
        # Discriminator update: one DDP forward over real and fake together.
        real, fake = self.d_logits(hr, sr.detach())
        d_loss = self.adv.d_loss(real, fake)
        _check_finite(d_loss, epoch, step)
        self._update(d_loss, self.opt_d, self.discriminator.parameters(), self.scaler_d)
        return {"train_loss": g_total.item(), "train_g_adv": g_adv.item(), "train_d_loss": d_loss.item(), **out}

    def state_dict(self):
        return {**super().state_dict(), "disc": self.discriminator.state_dict(), "opt_d": self.opt_d.state_dict(),
                "scaler_d": self.scaler_d.state_dict()}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        if state.get("disc"):
            self.discriminator.load_state_dict(state["disc"])
            self.opt_d.load_state_dict(state["opt_d"])
        if state.get("scaler_d"):
            self.scaler_d.load_state_dict(state["scaler_d"])


@register_step("diffusion")
class DiffusionStep(Step):
    def __init__(self, ctx, generator, cfg, gen_loss, amp):
        self.objective = _LossModule(generator)
        super().__init__(ctx, generator, cfg, gen_loss, amp)
        self.g_obj = ctx.wrap(self.objective)
        self.g = generator  # evaluation samples from the plain model

    def train_batch(self, lr, hr, epoch, step):
        with self.amp.autocast():
            loss = self.g_obj(lr, hr).float()
        _check_finite(loss, epoch, step)
        self._update(loss, self.opt_g, self.generator.parameters())
        return {"train_loss": loss.item()}

    def val_loss(self, lr, hr, sr, model=None):
        """The denoising objective of the evaluated weights (``model``, e.g. the EMA model; default: the
        trained generator) with timesteps and noise from a generator seeded with :data:`VAL_LOSS_SEED` for
        every batch: the same value for the same weights and batch, and the global RNG is not consumed."""
        model = unwrap(model) if model is not None else self.generator
        if isinstance(model, torch.optim.swa_utils.AveragedModel):
            model = model.module
        gen = torch.Generator(device=hr.device).manual_seed(VAL_LOSS_SEED)
        return model.training_loss(lr, hr, generator=gen)



class Amp:
    """Mixed precision on CUDA (bf16 where supported, else fp16 with a grad scaler); a no-op on CPU."""

    def __init__(self, setting: str, device: torch.device):
        self.dtype = None
        if device.type == "cuda" and setting != "off":
            if setting == "fp16" or (setting == "auto" and not torch.cuda.is_bf16_supported()):
                self.dtype = torch.float16
            else:
                self.dtype = torch.bfloat16
        self.device = device

    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)
