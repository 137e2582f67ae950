"""The SVD video UNet: SD 2.1's UNet with a temporal layer after every spatial layer.

Inputs are video-major `(B*T, C, H, W)` tensors (row b*T + t is frame t of video b), exactly
as sgm's `VideoUNet`; every module has sgm's name, so an official state dict loads after
stripping `model.diffusion_model.`. The UNet knows nothing of EDM: `timesteps` is c_noise.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from svdcli.models.attention import SpatialVideoTransformer
from svdcli.models.blocks import (Downsample, Upsample, VideoResBlock, normalization,
                                  timestep_embedding)
from svdcli.models.config import UNetConfig


class TimestepEmbedSequential(nn.Sequential):
    """A UNet block: a sequence of layers each given what it needs (emb, context, frames)."""

    def forward(self, x, emb, context, num_video_frames, image_only_indicator, temporal_context=None):
        for layer in self:
            if isinstance(layer, VideoResBlock):
                x = layer(x, emb, num_video_frames, image_only_indicator)
            elif isinstance(layer, SpatialVideoTransformer):
                x = layer(x, context, num_video_frames, image_only_indicator, temporal_context)
            else:
                x = layer(x)
        return x


class VideoUNet(nn.Module):
    """sgm's VideoUNet (SVD): forward(x, timesteps, context, y, num_video_frames, indicator)."""

    def __init__(self, cfg: UNetConfig):
        super().__init__()
        self.cfg = cfg
        self.gradient_checkpointing = False
        mc, ted = cfg.model_channels, cfg.time_embed_dim
        self.time_embed = nn.Sequential(nn.Linear(mc, ted), nn.SiLU(), nn.Linear(ted, ted))
        if cfg.adm_in_channels is not None:
            self.label_emb = nn.Sequential(nn.Sequential(
                nn.Linear(cfg.adm_in_channels, ted), nn.SiLU(), nn.Linear(ted, ted)))
        elif cfg.num_classes is not None:
            self.label_emb = nn.Embedding(cfg.num_classes, ted)
        self.input_blocks = nn.ModuleList(
            [TimestepEmbedSequential(nn.Conv2d(cfg.in_channels, mc, 3, padding=1))])
        skip_chans, ch = [mc], mc
        for level, out_ch in enumerate(cfg.level_channels()):
            for _ in range(cfg.num_res_blocks):
                self.input_blocks.append(self._block(level, ch, out_ch))
                ch = out_ch
                skip_chans.append(ch)
            if level != len(cfg.channel_mult) - 1:
                self.input_blocks.append(TimestepEmbedSequential(Downsample(ch)))
                skip_chans.append(ch)
        self.middle_block = TimestepEmbedSequential(
            self._resblock(ch, ch), self._transformer(ch, self_attention=True), self._resblock(ch, ch))
        self.output_blocks = nn.ModuleList()
        for level, out_ch in reversed(list(enumerate(cfg.level_channels()))):
            for i in range(cfg.num_res_blocks + 1):
                block = self._block(level, ch + skip_chans.pop(), out_ch)
                ch = out_ch
                if level and i == cfg.num_res_blocks:
                    block.append(Upsample(ch))
                self.output_blocks.append(block)
        self.out = nn.Sequential(normalization(ch), nn.SiLU(),
                                 nn.Conv2d(mc, cfg.out_channels, 3, padding=1))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    def _resblock(self, ch: int, out_ch: int) -> VideoResBlock:
        c = self.cfg
        return VideoResBlock(ch, c.time_embed_dim, out_ch, c.video_kernel_size, c.merge_strategy,
                             c.merge_factor, dropout=c.dropout)

    def _transformer(self, ch: int, self_attention: bool) -> SpatialVideoTransformer:
        c = self.cfg
        heads, dim_head = c.heads(ch)
        return SpatialVideoTransformer(
            ch, heads, dim_head, c.transformer_depth,
            c.context_dim, c.use_linear_in_transformer, c.merge_strategy, c.merge_factor,
            use_spatial_context=c.use_spatial_context,
            disable_temporal_crossattention=c.disable_temporal_crossattention,
            max_time_embed_period=c.max_ddpm_temb_period, dropout=c.dropout,
            disable_self_attn=not self_attention)

    def _block(self, level: int, ch: int, out_ch: int) -> TimestepEmbedSequential:
        layers = [self._resblock(ch, out_ch)]
        if self.cfg.level_has_attention(level):
            layers.append(self._transformer(out_ch, not self.cfg.self_attention_disabled(level)))
        return TimestepEmbedSequential(*layers)

    def _run(self, block: nn.Module, h: torch.Tensor, *args) -> torch.Tensor:
        if self.gradient_checkpointing and torch.is_grad_enabled():
            return checkpoint(block, h, *args, use_reentrant=False)
        return block(h, *args)

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor,
                y: torch.Tensor | None, num_video_frames: int,
                image_only_indicator: torch.Tensor | None = None,
                temporal_context: torch.Tensor | None = None) -> torch.Tensor:
        """x (B*T, C_in, H, W), timesteps (B*T,), context (B*T, L, D), y (B*T, adm) or class
        labels (B*T,) -> (B*T, C_out, H, W).

        `temporal_context` (B*T, L', D), when given, is what the temporal cross-attention layers
        attend to instead of `context` (SVD paper sec. 6.4: a separate temporal prompt)."""
        t = num_video_frames
        if x.shape[0] % t:
            raise ValueError(f"batch of {x.shape[0]} frames is not a multiple of {t} frames")
        if image_only_indicator is None:
            image_only_indicator = torch.zeros(x.shape[0] // t, t, device=x.device)
        # embeddings are computed in float32 and then follow the network's dtype (bf16 runs)
        emb = self.time_embed(timestep_embedding(timesteps, self.cfg.model_channels).to(x.dtype))
        if self.cfg.adm_in_channels is not None:
            emb = emb + self.label_emb(y.to(x.dtype))
        elif self.cfg.num_classes is not None:                 # class labels (N,), e.g. a noise level
            emb = emb + self.label_emb(y.long()).to(x.dtype)
        context = context.to(x.dtype) if context is not None else None
        if temporal_context is not None:
            temporal_context = temporal_context.to(x.dtype)
        args = (emb, context, t, image_only_indicator, temporal_context)
        h, skips = x, []
        for block in self.input_blocks:
            h = self._run(block, h, *args)
            skips.append(h)
        h = self._run(self.middle_block, h, *args)
        for block in self.output_blocks:
            h = self._run(block, torch.cat([h, skips.pop()], dim=1), *args)
        return self.out(h.type(x.dtype))
