"""SR3-style conditional diffusion (after Saharia et al. 2021, "Image Super-Resolution via Iterative
Refinement"), with DDIM sampling (Song et al. 2020) so ``model(lr)`` stays affordable.

- Target: the residual over bicubic, ``x0 = (hr - bicubic(lr)) / residual_scale``; the network never
  generates the bicubic part, only the detail on top of it.
- Conditioning: bicubic(lr) concatenated channel-wise to the noisy residual. ``prediction`` says what the
  small UNet outputs: ``x0`` (default) the clean residual itself, ``eps`` the noise, as in SR3/DDPM.
  ``training_loss(lr, hr)`` is MSE(x0_hat, x0), or DDPM's MSE(eps_hat, eps), at a uniformly drawn timestep
  (global torch RNG, so the training loop's seed governs it; pass ``generator`` for a fixed draw, as
  validation does).
- Why ``x0`` by default: the UNet's last conv is zero-initialised, so an untrained x0 model samples exactly
  bicubic(lr) (x0_hat = 0 at every step) and every update moves it off bicubic, like the pixel models. An
  untrained or briefly trained ``eps`` model instead amplifies its noise error by 1/sqrt(alpha_bar) at the
  high-noise steps: with few DDIM steps and a CPU-sized budget its samples sit at the clamp, far below
  bicubic (measured: the architectures study's cpu run, experiments/studies/architectures).
- Sampling (``forward``): DDIM with eta = 0 over ``sample_steps`` evenly spaced timesteps. The initial
  noise is a fixed 256x256 tile drawn once from ``torch.Generator().manual_seed(0)`` (a non-persistent
  buffer), tiled over larger images and shared by all images of a batch: ``model(lr)`` is deterministic,
  does not depend on batch composition, and traces / exports like any other model (the loop is unrolled
  into ``sample_steps`` UNet calls, fixed at export time). Predicted residuals are clamped to
  +-``clip_residual`` (image units) at each step (0 disables), which keeps early large-noise steps sane.
- Any input size: the HR-sized tensors are reflect-padded to a multiple of 2**(levels - 1) and cropped.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from lensearch.errors import UserError
from lensearch.models.common import bicubic, check_scale, conv3, pad_to_multiple
from lensearch.models.registry import ModelSpec, Param, register

NOISE_TILE = 256
NOISE_SEED = 0


def _group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(8, channels), channels)


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding (N,) -> (N, dim), dim even."""
    half = dim // 2
    freqs = torch.exp(torch.arange(half, device=t.device, dtype=torch.float32) * (-math.log(10000.0) / half))
    args = t.float()[:, None] * freqs[None]
    return torch.cat([args.sin(), args.cos()], 1)


def beta_schedule(kind: str, timesteps: int) -> torch.Tensor:
    """float64 betas. ``linear``: DDPM's 1e-4..0.02 rescaled by 1000/T; ``cosine``: Nichol & Dhariwal."""
    if kind == "linear":
        k = 1000.0 / timesteps
        betas = torch.linspace(1e-4 * k, 0.02 * k, timesteps, dtype=torch.float64)
    else:
        s = 0.008
        f = torch.cos((torch.arange(timesteps + 1, dtype=torch.float64) / timesteps + s) / (1 + s) * math.pi / 2) ** 2
        betas = 1 - f[1:] / f[:-1]
    return betas.clamp(max=0.999)


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, with the time embedding added in between; 1x1 skip when widths differ."""

    def __init__(self, cin: int, cout: int, emb_dim: int):
        super().__init__()
        self.norm1, self.conv1 = _group_norm(cin), conv3(cin, cout)
        self.emb = nn.Linear(emb_dim, cout)
        self.norm2, self.conv2 = _group_norm(cout), conv3(cout, cout)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x))) + self.emb(F.silu(emb))[:, :, None, None]
        return self.skip(x) + self.conv2(F.silu(self.norm2(h)))


class UNet(nn.Module):
    """Small time-conditioned UNet: ``num_res_blocks`` ResBlocks per level, strided-conv down,
    nearest+conv up, skip concatenation per level, two ResBlocks in the middle. No attention."""

    def __init__(self, cin: int, cout: int, base: int, mults: tuple[int, ...], num_res_blocks: int):
        super().__init__()
        self.emb_in, emb_dim = 2 * (base // 2), 4 * base
        self.time_mlp = nn.Sequential(nn.Linear(self.emb_in, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        chans = [base * m for m in mults]
        self.inp = conv3(cin, base)
        self.down, self.downsample = nn.ModuleList(), nn.ModuleList()
        ch = base
        for i, c in enumerate(chans):
            self.down.append(nn.ModuleList(ResBlock(ch if j == 0 else c, c, emb_dim) for j in range(num_res_blocks)))
            ch = c
            if i < len(chans) - 1:
                self.downsample.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
        self.mid = nn.ModuleList([ResBlock(ch, ch, emb_dim), ResBlock(ch, ch, emb_dim)])
        self.up, self.upsample = nn.ModuleList(), nn.ModuleList()
        for i in reversed(range(len(chans))):
            c = chans[i]
            self.up.append(nn.ModuleList(ResBlock(ch + c if j == 0 else c, c, emb_dim) for j in range(num_res_blocks)))
            ch = c
            if i > 0:
                self.upsample.append(nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), conv3(c, c)))
        self.out = nn.Sequential(_group_norm(ch), nn.SiLU(), conv3(ch, cout))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        emb = self.time_mlp(timestep_embedding(t, self.emb_in))
        h, skips = self.inp(x), []
        for i, blocks in enumerate(self.down):
            for block in blocks:
                h = block(h, emb)
            skips.append(h)
            if i < len(self.downsample):
                h = self.downsample[i](h)
        for block in self.mid:
            h = block(h, emb)
        for i, blocks in enumerate(self.up):
            h = torch.cat([h, skips.pop()], 1)
            for block in blocks:
                h = block(h, emb)
            if i < len(self.upsample):
                h = self.upsample[i](h)
        return self.out(h)


class DiffusionSR(nn.Module):
    def __init__(self, scale: int = 2, in_channels: int = 1, base_channels: int = 32, channel_mults: str = "1,2",
                 num_res_blocks: int = 1, timesteps: int = 1000, sample_steps: int = 10, schedule: str = "cosine",
                 residual_scale: float = 0.1, clip_residual: float = 1.0, prediction: str = "x0"):
        super().__init__()
        self.prediction = prediction
        mults = tuple(int(m) for m in channel_mults.split(","))
        self.scale, self.timesteps = check_scale(scale), timesteps
        self.residual_scale, self.clip_x0 = residual_scale, clip_residual / residual_scale
        self.multiple = 2 ** (len(mults) - 1)
        self.unet = UNet(2 * in_channels, in_channels, base_channels, mults, num_res_blocks)
        alphas_cumprod = torch.cumprod(1 - beta_schedule(schedule, timesteps), 0)
        self._ab = alphas_cumprod.tolist()
        self.register_buffer("alphas_cumprod", alphas_cumprod.float(), persistent=False)
        noise = torch.randn((1, in_channels, NOISE_TILE, NOISE_TILE),
                            generator=torch.Generator().manual_seed(NOISE_SEED))
        self.register_buffer("init_noise", noise, persistent=False)
        self.sample_steps = sample_steps

    @property
    def sample_steps(self) -> int:
        return len(self._plan)

    @sample_steps.setter
    def sample_steps(self, steps: int) -> None:
        """Set the DDIM plan: (t, alpha_bar_t, alpha_bar_prev) for ``steps`` evenly spaced timesteps."""
        if not 1 <= steps <= self.timesteps:
            raise UserError(f"model.diffusion.sample_steps: expected 1..timesteps ({self.timesteps}), got {steps}")
        ts = torch.linspace(self.timesteps - 1, 0, steps).round().long().tolist()
        prev = [self._ab[t] for t in ts[1:]] + [1.0]
        self._plan = [(t, self._ab[t], p) for t, p in zip(ts, prev)]

    def _net(self, x: torch.Tensor, cond: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.unet(torch.cat([x, cond], 1), t * (1000.0 / self.timesteps))

    def _initial_noise(self, like: torch.Tensor) -> torch.Tensor:
        b, _, h, w = like.shape
        reps = ((h + NOISE_TILE - 1) // NOISE_TILE, (w + NOISE_TILE - 1) // NOISE_TILE)
        return self.init_noise.repeat(1, 1, *reps)[..., :h, :w].expand(b, -1, -1, -1)

    def training_loss(self, lr: torch.Tensor, hr: torch.Tensor,
                      generator: torch.Generator | None = None) -> torch.Tensor:
        """MSE of the UNet's prediction (x0 or eps, per ``prediction``) at a random timestep per image (scalar). Timesteps and noise come from
        ``generator`` (on ``hr``'s device) when given, else from the global torch RNG."""
        up = bicubic(lr, self.scale)
        x0 = pad_to_multiple((hr - up) / self.residual_scale, self.multiple)
        cond = pad_to_multiple(up, self.multiple)
        t = torch.randint(0, self.timesteps, (hr.shape[0],), device=hr.device, generator=generator)
        ab = self.alphas_cumprod[t].view(-1, 1, 1, 1)
        noise = torch.randn(x0.shape, device=x0.device, dtype=x0.dtype, generator=generator)
        out = self._net(ab.sqrt() * x0 + (1 - ab).sqrt() * noise, cond, t)
        target = x0 if self.prediction == "x0" else noise
        h, w = hr.shape[-2:]
        return F.mse_loss(out[..., :h, :w], target[..., :h, :w])

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        """Deterministic DDIM (eta = 0) sample: bicubic(lr) + residual_scale * x0."""
        h, w = lr.shape[-2:]
        up = bicubic(lr, self.scale)
        cond = pad_to_multiple(up, self.multiple)
        x = self._initial_noise(cond)
        for t, ab, ab_prev in self._plan:
            out = self._net(x, cond, torch.full((1,), float(t), device=lr.device))
            if self.prediction == "x0":
                x0 = out.clamp(-self.clip_x0, self.clip_x0) if self.clip_x0 > 0 else out
                eps = (x - math.sqrt(ab) * x0) / math.sqrt(1 - ab)
            else:
                eps = out
                x0 = (x - math.sqrt(1 - ab) * eps) / math.sqrt(ab)
                if self.clip_x0 > 0:
                    x0 = x0.clamp(-self.clip_x0, self.clip_x0)
                    eps = (x - math.sqrt(ab) * x0) / math.sqrt(1 - ab)
            x = math.sqrt(ab_prev) * x0 + math.sqrt(1 - ab_prev) * eps
        return up + self.residual_scale * x[..., : h * self.scale, : w * self.scale]


register(ModelSpec(
    name="diffusion", kind="diffusion", build=DiffusionSR,
    params=(
        Param("base_channels", int, 32, "UNet channels at full resolution", low=8, high=256),
        Param("channel_mults", str, "1,2", "UNet channel multiplier per level (levels = count)",
              choices=("1", "1,2", "1,2,2", "1,2,4", "1,1,2,2", "1,2,2,4")),
        Param("num_res_blocks", int, 1, "ResBlocks per UNet level", low=1, high=4),
        Param("timesteps", int, 1000, "diffusion steps T for training", low=10, high=4000),
        Param("sample_steps", int, 10, "DDIM steps in model(lr) (<= timesteps); validation cost scales with it",
              low=1, high=1000),
        Param("schedule", str, "cosine", "beta schedule", choices=("linear", "cosine")),
        Param("residual_scale", float, 0.1, "x0 = (hr - bicubic) / residual_scale (~ the residual's std)",
              low=1e-4, high=10.0),
        Param("clip_residual", float, 1.0,
              "clamp the predicted residual to +-this (image units) while sampling; 0: off", low=0.0, high=1e3),
        Param("prediction", str, "x0", "what the UNet predicts: x0 (the clean residual; untrained = bicubic) or "
              "eps (the noise, as in SR3)", choices=("x0", "eps")),
    ),
    summary="SR3-style conditional DDPM on the residual over bicubic (small UNet), deterministic DDIM sampling",
))
