"""Building blocks of the SD f8 autoencoder and of SVD's temporal video decoder.

Module and parameter names follow the official checkpoint (sgm's `Encoder`/`Decoder`/
`VideoDecoder`), so loading an official state dict is a prefix strip. Frames travel as a
video-major batch `(B*T, C, H, W)`: row `b*T + t` is frame `t` of video `b`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

SPATIAL_NORM_EPS = 1e-6  # sgm `Normalize`: every spatial ResnetBlock, AttnBlock, norm_out
TEMPORAL_NORM_EPS = 1e-5  # sgm openaimodel `ResBlock` used as the decoder's `time_stack`


def spatial_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(32, channels, eps=SPATIAL_NORM_EPS, affine=True)


class GroupNorm32(nn.GroupNorm):
    """GroupNorm computed in float32 whatever the input and parameter dtypes (sgm's openaimodel norm)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.group_norm(x.float(), self.num_groups, self.weight.float(), self.bias.float(), self.eps)
        return out.type(x.dtype)


class ResnetBlock(nn.Module):
    """Pre-activation 2-D residual block; a 1x1 `nin_shortcut` when the width changes."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.norm1 = spatial_norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = spatial_norm(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        if in_channels != out_channels:
            self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        skip = self.nin_shortcut(x) if hasattr(self, "nin_shortcut") else x
        return skip + h


class TemporalResBlock(nn.Module):
    """3-D residual block mixing neighbouring frames with a (3,1,1) kernel (sgm `time_stack`).

    The Sequential indices (`in_layers.0/.2`, `out_layers.0/.3`) are the official key names.
    Zero padding in time makes the result depend on where a decode chunk starts and ends.
    """

    def __init__(self, channels: int, kernel_size: tuple[int, int, int] = (3, 1, 1)):
        super().__init__()
        padding = tuple(k // 2 for k in kernel_size)
        self.in_layers = nn.Sequential(
            GroupNorm32(32, channels, eps=TEMPORAL_NORM_EPS),
            nn.SiLU(),
            nn.Conv3d(channels, channels, kernel_size, padding=padding),
        )
        self.out_layers = nn.Sequential(
            GroupNorm32(32, channels, eps=TEMPORAL_NORM_EPS),
            nn.SiLU(),
            nn.Dropout(0.0),
            nn.Conv3d(channels, channels, kernel_size, padding=padding),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, T, H, W)
        return x + self.out_layers(self.in_layers(x))


def to_video(x: torch.Tensor, num_frames: int) -> torch.Tensor:
    """(B*T, C, H, W) -> (B, C, T, H, W)."""
    bt, c, h, w = x.shape
    return x.reshape(bt // num_frames, num_frames, c, h, w).transpose(1, 2)


def to_frames(x: torch.Tensor) -> torch.Tensor:
    """(B, C, T, H, W) -> (B*T, C, H, W)."""
    b, c, t, h, w = x.shape
    return x.transpose(1, 2).reshape(b * t, c, h, w)


class VideoResnetBlock(ResnetBlock):
    """Spatial ResnetBlock, then `time_stack`, blended as sigma(m)*temporal + (1-sigma(m))*spatial.

    The blend is the opposite convention to the UNet's AlphaBlender (sgm `VideoResBlock`).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size=(3, 1, 1)):
        super().__init__(in_channels, out_channels)
        self.time_stack = TemporalResBlock(out_channels, tuple(kernel_size))
        self.mix_factor = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        spatial = to_video(super().forward(x), num_frames)
        temporal = self.time_stack(spatial)
        alpha = torch.sigmoid(self.mix_factor)
        return to_frames(alpha * temporal + (1.0 - alpha) * spatial)


class VideoConvOut(nn.Conv2d):
    """3x3 output conv followed by a (3,1,1) Conv3d over time, no residual (sgm `AE3DConv`)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size=(3, 1, 1)):
        super().__init__(in_channels, out_channels, 3, padding=1)
        padding = tuple(k // 2 for k in kernel_size)
        self.time_mix_conv = nn.Conv3d(out_channels, out_channels, tuple(kernel_size), padding=padding)

    def forward(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        x = to_video(super().forward(x), num_frames)
        return to_frames(self.time_mix_conv(x))


class AttnBlock(nn.Module):
    """Single-head self-attention over the H*W positions of each frame, 1x1 convs as projections."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = spatial_norm(channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        hn = self.norm(x)
        # (B, C, H, W) -> (B, 1, H*W, C): one head spanning all channels
        q, k, v = (p(hn).reshape(b, 1, c, h * w).transpose(2, 3).contiguous()
                   for p in (self.q, self.k, self.v))
        out = F.scaled_dot_product_attention(q, k, v)
        out = out.transpose(2, 3).reshape(b, c, h, w)  # (B, 1, H*W, C) -> (B, C, H, W)
        return x + self.proj_out(out)


class Downsample(nn.Module):
    """Stride-2 3x3 conv after padding right and bottom only (the SD VAE's asymmetric pad)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Nearest-neighbour 2x upsampling followed by a 3x3 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Encoder(nn.Module):
    """SD f8 encoder: frames (N, 3, H, W) -> moments (N, 2*z, H/8, W/8), mean then log-variance."""

    def __init__(self, ch: int, ch_mult: tuple[int, ...], num_res_blocks: int, in_channels: int,
                 z_channels: int):
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, ch, 3, padding=1)
        widths = [ch * m for m in ch_mult]
        self.down = nn.ModuleList()
        block_in = ch
        for level, width in enumerate(widths):
            stage = nn.Module()
            stage.block = nn.ModuleList()
            for _ in range(num_res_blocks):
                stage.block.append(ResnetBlock(block_in, width))
                block_in = width
            if level != len(widths) - 1:
                stage.downsample = Downsample(block_in)
            self.down.append(stage)
        self.mid = nn.Module()
        self.mid.block_1 = ResnetBlock(block_in, block_in)
        self.mid.attn_1 = AttnBlock(block_in)
        self.mid.block_2 = ResnetBlock(block_in, block_in)
        self.norm_out = spatial_norm(block_in)
        self.conv_out = nn.Conv2d(block_in, 2 * z_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for stage in self.down:
            for block in stage.block:
                h = block(h)
            if hasattr(stage, "downsample"):
                h = stage.downsample(h)
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    """SD f8 decoder; with `temporal` every ResnetBlock and conv_out also mix frames (SVD).

    `up` is indexed by resolution level (0 = full size) although it runs from the last level.
    """

    def __init__(self, ch: int, ch_mult: tuple[int, ...], num_res_blocks: int, out_ch: int,
                 z_channels: int, temporal: bool, video_kernel_size=(3, 1, 1)):
        super().__init__()
        self.temporal = temporal

        def resblock(cin: int, cout: int) -> ResnetBlock:
            if temporal:
                return VideoResnetBlock(cin, cout, video_kernel_size)
            return ResnetBlock(cin, cout)

        widths = [ch * m for m in ch_mult]
        block_in = widths[-1]
        self.conv_in = nn.Conv2d(z_channels, block_in, 3, padding=1)
        self.mid = nn.Module()
        self.mid.block_1 = resblock(block_in, block_in)
        self.mid.attn_1 = AttnBlock(block_in)
        self.mid.block_2 = resblock(block_in, block_in)
        stages = []
        for level in reversed(range(len(widths))):
            stage = nn.Module()
            stage.block = nn.ModuleList()
            for _ in range(num_res_blocks + 1):
                stage.block.append(resblock(block_in, widths[level]))
                block_in = widths[level]
            if level != 0:
                stage.upsample = Upsample(block_in)
            stages.insert(0, stage)
        self.up = nn.ModuleList(stages)
        self.norm_out = spatial_norm(block_in)
        if temporal:
            self.conv_out = VideoConvOut(block_in, out_ch, video_kernel_size)
        else:
            self.conv_out = nn.Conv2d(block_in, out_ch, 3, padding=1)

    def forward(self, z: torch.Tensor, num_frames: int | None = None) -> torch.Tensor:
        """Latents (B*T, z, h, w) -> frames (B*T, 3, 8h, 8w); `num_frames` = T when temporal."""
        if self.temporal and num_frames is None:
            raise ValueError("the temporal decoder needs num_frames")
        video = {"num_frames": num_frames} if self.temporal else {}
        h = self.conv_in(z)
        h = self.mid.block_1(h, **video)
        h = self.mid.block_2(self.mid.attn_1(h), **video)
        for stage in reversed(self.up):
            for block in stage.block:
                h = block(h, **video)
            if hasattr(stage, "upsample"):
                h = stage.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)), **video)
