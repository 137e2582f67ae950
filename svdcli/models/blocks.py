"""Convolutional pieces of the video UNet: timestep embedding, (video) ResBlocks, the alpha
blender that mixes spatial and temporal paths, down/upsampling. Module and parameter names
are those of sgm, so official state dicts load without renaming."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def timestep_embedding(t: torch.Tensor, dim: int, max_period: int = 10000) -> torch.Tensor:
    """Sinusoidal embedding, cos half first, frequencies exp(-ln(max_period) i / (dim/2))."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period)
                      * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t[:, None].float() * freqs[None]                  # (N, half)
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class GroupNorm32(nn.GroupNorm):
    """GroupNorm computed in at least float32 whatever the input dtype (as sgm's ResBlocks do)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.to(torch.promote_types(x.dtype, torch.float32))).type(x.dtype)


def normalization(channels: int) -> GroupNorm32:
    return GroupNorm32(32, channels, eps=1e-5)


class TemporalConv(nn.Conv3d):
    """Conv3d; a (k,1,1) kernel runs as a Conv2d over (T, H*W), which CPU backends run much
    faster than their generic 3-D convolution. Same parameters, same result."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kernel_size[1:] != (1, 1) or self.stride != (1, 1, 1) or self.padding[1:] != (0, 0):
            return super().forward(x)
        b, c, t, h, w = x.shape
        y = F.conv2d(x.reshape(b, c, t, h * w), self.weight.squeeze(-1), self.bias,
                     padding=(self.padding[0], 0))   # (B, C, T, H*W): kernel (k, 1)
        return y.reshape(b, -1, y.shape[2], h, w)


def conv_nd(dims: int, *args, **kwargs) -> nn.Module:
    return {2: nn.Conv2d, 3: TemporalConv}[dims](*args, **kwargs)


class ResBlock(nn.Module):
    """The SD ResBlock; with dims=3 and a (3,1,1) kernel it is the temporal `time_stack`."""

    def __init__(self, channels: int, emb_channels: int, out_channels: int | None = None,
                 dims: int = 2, kernel_size: int | tuple[int, ...] = 3, dropout: float = 0.0,
                 exchange_temb_dims: bool = False):
        super().__init__()
        out_channels = out_channels or channels
        padding = [k // 2 for k in kernel_size] if isinstance(kernel_size, (tuple, list)) \
            else kernel_size // 2
        self.exchange_temb_dims = exchange_temb_dims
        self.in_layers = nn.Sequential(
            normalization(channels), nn.SiLU(),
            conv_nd(dims, channels, out_channels, kernel_size, padding=padding))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, out_channels))
        self.out_layers = nn.Sequential(
            normalization(out_channels), nn.SiLU(), nn.Dropout(p=dropout),
            conv_nd(dims, out_channels, out_channels, kernel_size, padding=padding))
        nn.init.zeros_(self.out_layers[-1].weight)
        nn.init.zeros_(self.out_layers[-1].bias)
        self.skip_connection = nn.Identity() if out_channels == channels \
            else conv_nd(dims, channels, out_channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.in_layers(x)
        emb_out = self.emb_layers(emb).type(h.dtype)
        if self.exchange_temb_dims:
            emb_out = emb_out.transpose(1, 2)                   # (B, T, C) -> (B, C, T)
        while emb_out.ndim < h.ndim:
            emb_out = emb_out[..., None]
        h = self.out_layers(h + emb_out)
        return self.skip_connection(x) + h


class AlphaBlender(nn.Module):
    """out = alpha x_spatial + (1 - alpha) x_temporal, alpha per merge strategy (Video LDM)."""

    def __init__(self, alpha: float, merge_strategy: str, video_layout: bool):
        super().__init__()
        self.merge_strategy = merge_strategy
        # video_layout: tensors are (B, C, T, H, W); otherwise (B*T, S, C) token rows.
        self.video_layout = video_layout
        if merge_strategy == "fixed":
            self.register_buffer("mix_factor", torch.tensor([alpha], dtype=torch.float32))
        else:
            self.mix_factor = nn.Parameter(torch.tensor([alpha], dtype=torch.float32))

    def get_alpha(self, image_only_indicator: torch.Tensor | None) -> torch.Tensor:
        if self.merge_strategy == "fixed":
            return self.mix_factor
        alpha = torch.sigmoid(self.mix_factor)
        if self.merge_strategy == "learned":
            return alpha
        # learned_with_images: image-only samples take the spatial path alone (alpha = 1).
        alpha = torch.where(image_only_indicator.bool(), torch.ones_like(alpha), alpha)  # (B, T)
        if self.video_layout:
            return alpha[:, None, :, None, None]                    # (B, 1, T, 1, 1)
        return alpha.reshape(-1, 1, 1)                              # (B*T, 1, 1)

    def forward(self, x_spatial: torch.Tensor, x_temporal: torch.Tensor,
                image_only_indicator: torch.Tensor | None) -> torch.Tensor:
        alpha = self.get_alpha(image_only_indicator).to(x_spatial.dtype)
        return alpha * x_spatial + (1.0 - alpha) * x_temporal


class VideoResBlock(ResBlock):
    """Spatial ResBlock, then a temporal (3,1,1) ResBlock over frames, blended by alpha."""

    def __init__(self, channels: int, emb_channels: int, out_channels: int | None,
                 video_kernel_size: tuple[int, ...], merge_strategy: str, merge_factor: float,
                 dropout: float = 0.0):
        super().__init__(channels, emb_channels, out_channels, dropout=dropout)
        out_channels = out_channels or channels
        self.time_stack = ResBlock(out_channels, emb_channels, out_channels, dims=3,
                                   kernel_size=tuple(video_kernel_size), dropout=dropout,
                                   exchange_temb_dims=True)
        self.time_mixer = AlphaBlender(merge_factor, merge_strategy, video_layout=True)

    def forward(self, x: torch.Tensor, emb: torch.Tensor, num_video_frames: int,
                image_only_indicator: torch.Tensor | None) -> torch.Tensor:
        x = super().forward(x, emb)
        bt, c, h, w = x.shape
        t = num_video_frames
        # contiguous (B, C, T, H, W): GroupNorm and the temporal conv run far faster on it
        x = x.reshape(bt // t, t, c, h, w).transpose(1, 2).contiguous()  # (B*T, C, H, W) -> (B, C, T, H, W)
        x_temporal = self.time_stack(x, emb.reshape(bt // t, t, -1))
        x = self.time_mixer(x, x_temporal, image_only_indicator)
        return x.transpose(1, 2).reshape(bt, c, h, w)           # (B, C, T, H, W) -> (B*T, C, H, W)


class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))
