"""The VDM network: an image U-Net factorised over space and time, in pixel space (Ho et al. 2022, sec. 3).

Every tensor is (N, C, H, W) with N = B*T frames, video-major. Convolutions are 2-D convs
applied to each frame (a 1x3x3 space-only 3-D conv: no mixing across frames); spatial
attention attends within a frame; after each spatial attention block a temporal attention
block attends over the frames of one video at each spatial position. Temporal attention has
no absolute notion of time: its only positional input is a learned bias per head and per
frame offset j - i, clipped to +-max_offset (a T5-style relative position bias), so shifting
a clip in time shifts the outputs. In joint image-video training the frames flagged by
`image_only_indicator` attend only to themselves (sec. 3: the attention matrix of an image is
the identity), so an image never mixes with the video or with the other images.

`VDMDenoiser` is the U-Net as D(x, sigma) for the samplers and the loss (`edm.Denoiser` with
the U-Net's call): the U-Net predicts eps or v of z_t = alpha_t x + sigma_t eps on the
continuous cosine schedule.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from svdcli.diffusion.edm import Denoiser
from svdcli.families.vdm.config import VDMNetConfig


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(8, channels), channels)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding (N,) -> (N, dim) of the continuous time label, scaled to 0..1000."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = 1000.0 * t.float()[:, None] * freqs[None]
    return torch.cat([args.cos(), args.sin()], dim=1)


class ResBlock(nn.Module):
    """Two per-frame 3x3 convs (1x3x3 in space-time) with the time embedding added in between."""

    def __init__(self, cin: int, cout: int, emb_dim: int):
        super().__init__()
        self.norm1, self.conv1 = _norm(cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb_dim, cout)
        self.norm2, self.conv2 = _norm(cout), nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(F.silu(emb))[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(..., L, C) -> (..., heads, L, C / heads)."""
    *lead, length, c = x.shape
    return x.reshape(*lead, length, heads, c // heads).transpose(-3, -2)


def _merge(x: torch.Tensor) -> torch.Tensor:
    """(..., heads, L, d) -> (..., L, heads * d)."""
    *lead, heads, length, d = x.shape
    return x.transpose(-3, -2).reshape(*lead, length, heads * d)


class SpatialAttention(nn.Module):
    """Self-attention among the H*W positions of each frame, then cross-attention to the text tokens."""

    def __init__(self, channels: int, heads: int, context_dim: int):
        super().__init__()
        self.heads = heads
        self.norm, self.qkv, self.proj = _norm(channels), nn.Linear(channels, 3 * channels), nn.Linear(channels, channels)
        self.cross = None
        if context_dim:
            self.cross_norm = nn.LayerNorm(channels)
            self.q = nn.Linear(channels, channels)
            self.kv = nn.Linear(context_dim, 2 * channels)
            self.cross = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        n, c, h, w = x.shape
        y = self.norm(x).reshape(n, c, h * w).transpose(1, 2)          # (N, C, H, W) -> (N, H*W, C)
        q, k, v = (_heads(part, self.heads) for part in self.qkv(y).chunk(3, dim=-1))
        y = self.proj(_merge(F.scaled_dot_product_attention(q, k, v)))
        tokens = y + x.reshape(n, c, h * w).transpose(1, 2)
        if self.cross is not None and context is not None:
            q = _heads(self.q(self.cross_norm(tokens)), self.heads)
            k, v = (_heads(part, self.heads) for part in self.kv(context.to(tokens.dtype)).chunk(2, dim=-1))
            tokens = tokens + self.cross(_merge(F.scaled_dot_product_attention(q, k, v)))
        return tokens.transpose(1, 2).reshape(n, c, h, w)


def temporal_mask(image_only_indicator: torch.Tensor) -> torch.Tensor:
    """(B, T) with 1 on lone images -> (B, T, T) allowed[i, j]: video frames see video frames,
    an image sees only itself."""
    video = image_only_indicator < 0.5
    eye = torch.eye(video.shape[1], dtype=torch.bool, device=video.device)
    return (video[:, :, None] & video[:, None, :]) | eye


class TemporalAttention(nn.Module):
    """Self-attention over the T frames at each spatial position, with a learned relative
    position bias b[head, clip(j - i, -M, M)] added to the logits (no absolute time)."""

    def __init__(self, channels: int, heads: int, max_offset: int):
        super().__init__()
        self.heads, self.max_offset = heads, max_offset
        self.norm, self.qkv, self.proj = _norm(channels), nn.Linear(channels, 3 * channels), nn.Linear(channels, channels)
        self.rel_bias = nn.Parameter(torch.randn(heads, 2 * max_offset + 1) * 0.02)

    def bias(self, frames: int, device) -> torch.Tensor:
        """(heads, T, T): the bias of query frame i attending to key frame j."""
        pos = torch.arange(frames, device=device)
        offset = (pos[None, :] - pos[:, None]).clamp(-self.max_offset, self.max_offset) + self.max_offset
        return self.rel_bias[:, offset]

    def forward(self, x: torch.Tensor, frames: int, image_only_indicator: torch.Tensor | None = None) -> torch.Tensor:
        n, c, h, w = x.shape
        b = n // frames
        y = self.norm(x).reshape(b, frames, c, h * w).permute(0, 3, 1, 2)   # (B*T, C, H, W) -> (B, H*W, T, C)
        q, k, v = (_heads(part, self.heads) for part in self.qkv(y).chunk(3, dim=-1))  # (B, H*W, heads, T, d)
        bias = self.bias(frames, x.device).to(q.dtype)[None].expand(b, -1, -1, -1)       # (B, heads, T, T)
        if image_only_indicator is not None:
            allowed = temporal_mask(image_only_indicator.reshape(b, frames))
            bias = bias.masked_fill(~allowed[:, None], float("-inf"))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias[:, None])       # (B, H*W, heads, T, d)
        out = self.proj(_merge(out))                                                  # (B, H*W, T, C)
        return x + out.permute(0, 2, 3, 1).reshape(n, c, h, w)                        # -> (B*T, C, H, W)


class SpaceTimeAttention(nn.Module):
    """A spatial attention block followed by a temporal attention block (VDM sec. 3)."""

    def __init__(self, channels: int, cfg: VDMNetConfig):
        super().__init__()
        self.spatial = SpatialAttention(channels, cfg.heads, cfg.context_dim)
        self.temporal = TemporalAttention(channels, cfg.heads, cfg.max_offset)

    def forward(self, x, context, frames, image_only_indicator):
        return self.temporal(self.spatial(x, context), frames, image_only_indicator)


class VDMUNet(nn.Module):
    """F(z_t, t, context) -> eps or v prediction, (N, 3, H, W) -> (N, 3, H, W)."""

    def __init__(self, cfg: VDMNetConfig):
        super().__init__()
        self.cfg = cfg
        ch, emb_dim = cfg.channels, 4 * cfg.channels
        self.time = nn.Sequential(nn.Linear(ch, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.inp = nn.Conv2d(3, ch, 3, padding=1)
        self.down, skips, width = nn.ModuleList(), [ch], ch
        for level, mult in enumerate(cfg.mults):
            for _ in range(cfg.num_res_blocks):
                self.down.append(self._stage(width, ch * mult, level, emb_dim))
                width = ch * mult
                skips.append(width)
            if level < len(cfg.mults) - 1:
                self.down.append(nn.Conv2d(width, width, 3, stride=2, padding=1))
                skips.append(width)
        self.middle = nn.ModuleList([ResBlock(width, width, emb_dim), SpaceTimeAttention(width, cfg),
                                     ResBlock(width, width, emb_dim)])
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(cfg.mults))):
            for _ in range(cfg.num_res_blocks + 1):
                self.up.append(self._stage(width + skips.pop(), ch * mult, level, emb_dim))
                width = ch * mult
            if level > 0:
                self.up.append(nn.Upsample(scale_factor=2, mode="nearest"))
        self.out = nn.Sequential(_norm(width), nn.SiLU(), nn.Conv2d(width, 3, 3, padding=1))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    def _stage(self, cin: int, cout: int, level: int, emb_dim: int) -> nn.ModuleList:
        parts = [ResBlock(cin, cout, emb_dim)]
        if level in self.cfg.attention_levels:
            parts.append(SpaceTimeAttention(cout, self.cfg))
        return nn.ModuleList(parts)

    def _run(self, block, h, emb, context, frames, indicator):
        for part in block if isinstance(block, nn.ModuleList) else [block]:
            if isinstance(part, ResBlock):
                h = part(h, emb)
            elif isinstance(part, SpaceTimeAttention):
                h = part(h, context, frames, indicator)
            else:
                h = part(h)
        return h

    def forward(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor | None = None, frames: int = 1,
                image_only_indicator: torch.Tensor | None = None) -> torch.Tensor:
        emb = self.time(timestep_embedding(t.reshape(-1).expand(x.shape[0]), self.cfg.channels).to(x.dtype))
        h = self.inp(x)
        skips = [h]
        for block in self.down:
            h = self._run(block, h, emb, context, frames, image_only_indicator)
            skips.append(h)
        h = self._run(self.middle, h, emb, context, frames, image_only_indicator)
        for block in self.up:
            if isinstance(block, nn.ModuleList):
                h = torch.cat([h, skips.pop()], dim=1)
            h = self._run(block, h, emb, context, frames, image_only_indicator)
        return self.out(h)


class VDMDenoiser(Denoiser):
    """D(x, sigma) = c_skip x + c_out F(c_in x, t(sigma)) (EDM eq. 7, `edm.Denoiser`) for the VP
    network F that predicts eps or v (`EpsScaling` / `VScaling`) on the cosine schedule, trained
    on its own target (objective "network": ||eps - eps_hat||^2 or ||v - v_hat||^2)."""

    def __init__(self, net: VDMUNet, parameterisation: str = "v", logsnr_min: float = -20.0,
                 logsnr_max: float = 20.0):
        from svdcli.diffusion.scalings import EpsScaling, VScaling
        from svdcli.diffusion.schedules import CosineSchedule

        schedule = CosineSchedule(logsnr_min, logsnr_max)
        super().__init__(net, (VScaling if parameterisation == "v" else EpsScaling)(schedule), objective="network")
        self.schedule, self.parameterisation = schedule, parameterisation

    def network(self, x_in, c_noise, cond, num_video_frames, image_only_indicator):
        """The U-Net reads the text tokens as `context`."""
        return self.net(x_in, c_noise, cond.get("context"), num_video_frames, image_only_indicator)
