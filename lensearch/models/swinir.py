"""SwinIR-type transformer for super-resolution (after Liang et al. 2021, "SwinIR").

3x3 conv (shallow features) -> ``num_groups`` residual Swin transformer groups (each: ``depth`` Swin layers
alternating plain and shifted-window multi-head self-attention with a learned relative position bias,
then a 3x3 conv and a group residual) -> LayerNorm -> 3x3 conv + shallow-feature residual -> conv +
LeakyReLU -> pixel-shuffle stages -> 3x3 conv. Optional global skip over bicubic(LR), with the last conv
starting at zero (the untrained model is exactly bicubic).

Any input size: the LR image is reflect-padded at the bottom/right to a multiple of ``window_size`` and
the output cropped back to scale x input. The shifted-window attention mask is computed from the padded
size with tensor ops (``arange`` comparisons), so tracing and ONNX export with dynamic H/W stay valid.
"""

from __future__ import annotations

import torch
from torch import nn

from lensearch.errors import UserError
from lensearch.models.common import (BICUBIC_SKIP, bicubic, conv3, pad_to_multiple, pixel_shuffle_upsampler,
                                     zero_init_tail)
from lensearch.models.registry import ModelSpec, Param, register

_MASKED = -100.0  # added to attention logits between tokens from different regions of a shifted window


def window_partition(x: torch.Tensor, ws: int) -> torch.Tensor:
    """(B, H, W, C) -> (B * nW, ws * ws, C), windows in row-major order."""
    b, h, w, c = x.shape
    x = x.view(b, h // ws, ws, w // ws, ws, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, ws * ws, c)


def window_merge(windows: torch.Tensor, ws: int, h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`window_partition`: (B * nW, ws * ws, C) -> (B, H, W, C)."""
    c = windows.shape[-1]
    x = windows.view(-1, h // ws, w // ws, ws, ws, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, h, w, c)


def shifted_window_mask(h: int, w: int, ws: int, shift: int, device: torch.device) -> torch.Tensor:
    """(nW, ws*ws, ws*ws) additive mask: 0 within a region, -100 across regions of the rolled image.

    After rolling by -shift, the last ``ws`` rows (columns) of the image hold two regions: rows
    [h-ws, h-shift) and the wrapped-around rows [h-shift, h). Tokens attend only within their region.
    """
    def region(n: int) -> torch.Tensor:
        r = torch.arange(n, device=device)
        return (r >= n - ws).long() + (r >= n - shift).long()

    ids = region(h)[:, None] * 3 + region(w)[None, :]
    win = window_partition(ids[None, :, :, None], ws).squeeze(-1)  # (nW, N)
    return (win[:, :, None] != win[:, None, :]).float() * _MASKED


class WindowAttention(nn.Module):
    """Multi-head self-attention inside a window with a relative position bias table."""

    def __init__(self, dim: int, window_size: int, num_heads: int):
        super().__init__()
        self.heads, self.scale = num_heads, (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))
        nn.init.trunc_normal_(self.bias_table, std=0.02)
        coords = torch.stack(torch.meshgrid(torch.arange(window_size), torch.arange(window_size),
                                            indexing="ij")).flatten(1)          # (2, N)
        rel = (coords[:, :, None] - coords[:, None, :]) + (window_size - 1)      # (2, N, N), >= 0
        self.register_buffer("bias_index", rel[0] * (2 * window_size - 1) + rel[1], persistent=False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        bw, n, c = x.shape
        q, k, v = self.qkv(x).view(bw, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        attn = attn + self.bias_table[self.bias_index].permute(2, 0, 1)
        if mask is not None:
            nw = mask.shape[0]
            attn = (attn.view(-1, nw, self.heads, n, n) + mask[None, :, None]).view(bw, self.heads, n, n)
        out = (attn.softmax(-1) @ v).transpose(1, 2).reshape(bw, n, c)
        return self.proj(out)


class SwinLayer(nn.Module):
    """Pre-norm (shifted-)window attention + MLP, both residual, on (B, H, W, C) tokens."""

    def __init__(self, dim: int, num_heads: int, window_size: int, shift: int, mlp_ratio: float):
        super().__init__()
        self.ws, self.shift = window_size, shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window_size, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        _, h, w, _ = x.shape
        y = self.norm1(x)
        if self.shift:
            y = torch.roll(y, (-self.shift, -self.shift), (1, 2))
        y = window_merge(self.attn(window_partition(y, self.ws), mask if self.shift else None), self.ws, h, w)
        if self.shift:
            y = torch.roll(y, (self.shift, self.shift), (1, 2))
        x = x + y
        return x + self.mlp(self.norm2(x))


class SwinGroup(nn.Module):
    """Residual Swin transformer group: ``depth`` layers (every other one shifted) -> 3x3 conv, + input."""

    def __init__(self, dim: int, depth: int, num_heads: int, window_size: int, mlp_ratio: float):
        super().__init__()
        self.layers = nn.ModuleList(
            SwinLayer(dim, num_heads, window_size, (window_size // 2) * (i % 2), mlp_ratio) for i in range(depth))
        self.conv = conv3(dim, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x: (B, C, H, W)."""
        y = x.permute(0, 2, 3, 1)
        for layer in self.layers:
            y = layer(y, mask)
        return x + self.conv(y.permute(0, 3, 1, 2))


class SwinIR(nn.Module):
    def __init__(self, scale: int = 2, in_channels: int = 1, embed_dim: int = 48, num_groups: int = 2,
                 depth: int = 4, num_heads: int = 4, window_size: int = 8, mlp_ratio: float = 2.0,
                 bicubic_skip: bool = True):
        super().__init__()
        if embed_dim % num_heads:
            raise UserError(f"model.swinir.num_heads: expected a divisor of embed_dim ({embed_dim}), "
                            f"got {num_heads}")
        self.scale, self.ws, self.bicubic_skip = scale, window_size, bicubic_skip
        self.head = conv3(in_channels, embed_dim)
        self.groups = nn.ModuleList(
            SwinGroup(embed_dim, depth, num_heads, window_size, mlp_ratio) for _ in range(num_groups))
        self.norm = nn.LayerNorm(embed_dim)
        self.body_conv = conv3(embed_dim, embed_dim)
        self.upsample = nn.Sequential(conv3(embed_dim, embed_dim), nn.LeakyReLU(0.2, inplace=True),
                                      pixel_shuffle_upsampler(embed_dim, scale),
                                      zero_init_tail(conv3(embed_dim, in_channels), bicubic_skip))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        xp = pad_to_multiple(x, self.ws)
        mask = shifted_window_mask(xp.shape[-2], xp.shape[-1], self.ws, self.ws // 2, x.device)
        f = self.head(xp)
        y = f
        for group in self.groups:
            y = group(y, mask)
        y = self.norm(y.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        out = self.upsample(f + self.body_conv(y))[..., : h * self.scale, : w * self.scale]
        return out + bicubic(x, self.scale) if self.bicubic_skip else out


register(ModelSpec(
    name="swinir", kind="pixel", build=SwinIR,
    params=(
        Param("embed_dim", int, 48, "token channels (a multiple of num_heads)", low=8, high=512),
        Param("num_groups", int, 2, "residual Swin transformer groups", low=1, high=12),
        Param("depth", int, 4, "Swin layers per group (alternating plain / shifted windows)", low=1, high=12),
        Param("num_heads", int, 4, "attention heads", low=1, high=32),
        Param("window_size", int, 8, "attention window side in LR pixels (input padded to a multiple)",
              low=2, high=32),
        Param("mlp_ratio", float, 2.0, "MLP hidden width / embed_dim", low=0.5, high=8.0),
        BICUBIC_SKIP,
    ),
    summary="SwinIR-type transformer: residual groups of (shifted-)window attention, pixel-shuffle upsampler",
))
