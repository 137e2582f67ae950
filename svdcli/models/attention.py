"""Transformer pieces of the video UNet: SDPA attention, GEGLU feed-forward, the spatial
transformer block, the temporal transformer block and the spatial-video transformer that
blends them. Names follow sgm (`transformer_blocks`, `time_stack`, `time_pos_embed`, ...)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from svdcli.models.blocks import AlphaBlender, timestep_embedding


class CrossAttention(nn.Module):
    """Multi-head (cross-)attention through torch's scaled_dot_product_attention."""

    def __init__(self, query_dim: int, heads: int, dim_head: int, context_dim: int | None = None,
                 dropout: float = 0.0):
        super().__init__()
        inner = heads * dim_head
        context_dim = context_dim or query_dim
        self.heads = heads
        self.to_q = nn.Linear(query_dim, inner, bias=False)
        self.to_k = nn.Linear(context_dim, inner, bias=False)
        self.to_v = nn.Linear(context_dim, inner, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, query_dim), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        if context is not None and context.shape[1] == 1:
            return self.single_key(x, context)
        b, n, _ = x.shape
        if context is None and self._fusable():     # self-attention: one matmul for q, k and v
            w = torch.cat([self.to_q.weight, self.to_k.weight, self.to_v.weight])
            q, k, v = F.linear(x, w).chunk(3, dim=-1)
        else:                           # cross-attention, or wrapped projections (LoRA) must run
            context = x if context is None else context
            q, k, v = self.to_q(x), self.to_k(context), self.to_v(context)
        # (b, n, heads*d) -> (b, heads, n, d)
        q, k, v = (t.reshape(b, t.shape[1], self.heads, -1).transpose(1, 2) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v)
        out = out.transpose(1, 2).reshape(b, n, -1)         # (b, heads, n, d) -> (b, n, heads*d)
        return self.to_out(out)

    def _fusable(self) -> bool:
        """The fused q/k/v matmul reads `.weight` itself, bypassing the projections' forward: exact
        for plain Linears only (not LoRA-wrapped ones), and only with materialised weights (ZeRO-3
        gathers a module's partitioned weights, marked `ds_id`, when its own forward runs)."""
        return all(type(m) is nn.Linear and not hasattr(m.weight, "ds_id")
                   for m in (self.to_q, self.to_k, self.to_v))

    def single_key(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """Attention to one key: softmax over one logit is exactly 1, so every query gets v.

        SVD's cross-attention context is a single CLIP token, so this skips the q/k projections
        and the attention itself. Returns (N, 1, C), broadcast over the queries by the caller's
        residual add. The zero term keeps the exact (zero) gradients of x and of the q/k
        projections (LoRA matrices included) that the full computation gives, so optimizers see
        the same parameters either way; it calls the projections on one token, so ZeRO-3 gathers
        their weights as it would for the full computation.
        """
        q, k = self.to_q(x[:1, :1]), self.to_k(context[:1, :1])   # (1, 1, heads*d)
        zero = 0.0 * (x.sum() + q.sum() + k.sum())
        return self.to_out(self.to_v(context)) + zero


class GEGLU(nn.Module):
    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out * 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, gate = self.proj(x).chunk(2, dim=-1)
        return x * F.gelu(gate)


class FeedForward(nn.Module):
    """GEGLU feed-forward with 4x expansion (`net.0.proj`, `net.2` as in sgm)."""

    def __init__(self, dim: int, dim_out: int | None = None, mult: int = 4, dropout: float = 0.0):
        super().__init__()
        inner = dim * mult
        self.net = nn.Sequential(GEGLU(dim, inner), nn.Dropout(dropout), nn.Linear(inner, dim_out or dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class BasicTransformerBlock(nn.Module):
    """Per-frame self-attention, cross-attention to the context, feed-forward (pre-norm).
    `disable_self_attn`: attn1 attends to the context as well (ldm's option; SD's x4 upscaler)."""

    def __init__(self, dim: int, heads: int, dim_head: int, context_dim: int, dropout: float = 0.0,
                 disable_self_attn: bool = False):
        super().__init__()
        self.disable_self_attn = disable_self_attn
        self.attn1 = CrossAttention(dim, heads, dim_head, context_dim=context_dim if disable_self_attn else None,
                                    dropout=dropout)
        self.ff = FeedForward(dim, dropout=dropout)
        self.attn2 = CrossAttention(dim, heads, dim_head, context_dim=context_dim, dropout=dropout)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        x = self.attn1(self.norm1(x), context=context if self.disable_self_attn else None) + x
        x = self.attn2(self.norm2(x), context=context) + x
        return self.ff(self.norm3(x)) + x


class VideoTransformerBlock(nn.Module):
    """Temporal block over the frames of each spatial position: ff_in, self-attn, cross-attn, FF."""

    def __init__(self, dim: int, heads: int, dim_head: int, context_dim: int | None,
                 disable_crossattention: bool = False, dropout: float = 0.0):
        super().__init__()
        self.norm_in = nn.LayerNorm(dim)
        self.ff_in = FeedForward(dim, dropout=dropout)
        self.attn1 = CrossAttention(dim, heads, dim_head, dropout=dropout)
        self.ff = FeedForward(dim, dropout=dropout)
        self.attn2 = None
        if not disable_crossattention:
            self.norm2 = nn.LayerNorm(dim)
            self.attn2 = CrossAttention(dim, heads, dim_head, context_dim=context_dim, dropout=dropout)
        self.norm1, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None, num_frames: int) -> torch.Tensor:
        bt, s, c = x.shape
        t = num_frames
        # (B*T, S, C) -> (B*S, T, C): attend over frames at each spatial position
        x = x.reshape(bt // t, t, s, c).transpose(1, 2).reshape(-1, t, c)
        x = self.ff_in(self.norm_in(x)) + x
        x = self.attn1(self.norm1(x)) + x
        if self.attn2 is not None:
            x = self._cross_attend(self.norm2(x), context) + x
        x = self.ff(self.norm3(x)) + x
        return x.reshape(bt // t, s, t, c).transpose(1, 2).reshape(bt, s, c)  # back to (B*T, S, C)


    def _cross_attend(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """x (B*S, T, C) attends to its video's context (B, L, D), shared by the S positions."""
        if context is None:             # no spatial context: sgm's attn2 then attends to x itself
            return self.attn2(x)
        rows = x.shape[0] // context.shape[0]
        if context.shape[1] == 1:       # one token: project it once per video, not per position
            return self.attn2.single_key(x, context).repeat_interleave(rows, dim=0)  # (B*S, 1, C)
        return self.attn2(x, context.repeat_interleave(rows, dim=0))


class SpatialVideoTransformer(nn.Module):
    """Spatial transformer per frame, blended by alpha with a temporal transformer over frames."""

    def __init__(self, channels: int, heads: int, dim_head: int, depth: int, context_dim: int,
                 use_linear: bool, merge_strategy: str, merge_factor: float,
                 use_spatial_context: bool = True, disable_temporal_crossattention: bool = False,
                 max_time_embed_period: int = 10000, dropout: float = 0.0, disable_self_attn: bool = False):
        super().__init__()
        inner = heads * dim_head
        self.use_linear = use_linear
        self.use_spatial_context = use_spatial_context
        self.max_time_embed_period = max_time_embed_period
        self.norm = nn.GroupNorm(32, channels, eps=1e-6)
        self.proj_in = nn.Linear(channels, inner) if use_linear else nn.Conv2d(channels, inner, 1)
        self.transformer_blocks = nn.ModuleList(
            [BasicTransformerBlock(inner, heads, dim_head, context_dim, dropout, disable_self_attn)
             for _ in range(depth)])
        # SVD's temporal cross-attention attends to the first frame's spatial context; without
        # use_spatial_context it becomes a second self-attention over frames (as in sgm).
        self.time_stack = nn.ModuleList(
            [VideoTransformerBlock(inner, heads, dim_head, context_dim if use_spatial_context else None,
                                   disable_temporal_crossattention, dropout) for _ in range(depth)])
        self.time_pos_embed = nn.Sequential(nn.Linear(channels, channels * 4), nn.SiLU(),
                                            nn.Linear(channels * 4, channels))
        self.time_mixer = AlphaBlender(merge_factor, merge_strategy, video_layout=False)
        self.proj_out = nn.Linear(inner, channels) if use_linear else nn.Conv2d(inner, channels, 1)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def forward(self, x: torch.Tensor, context: torch.Tensor, num_video_frames: int,
                image_only_indicator: torch.Tensor | None,
                temporal_context: torch.Tensor | None = None) -> torch.Tensor:
        bt, c, h, w = x.shape
        t = num_video_frames
        # The temporal cross-attention sees the first frame's context, shared by all positions:
        # `temporal_context` when given (a separate temporal prompt, SVD paper 6.4), else `context`.
        time_source = temporal_context if temporal_context is not None else context
        time_context = time_source[::t] if self.use_spatial_context else None   # (B, L, D)
        x_in = x
        x = self.norm(x)
        if not self.use_linear:
            x = self.proj_in(x)
        x = x.reshape(bt, -1, h * w).transpose(1, 2)        # (B*T, C, H, W) -> (B*T, H*W, C)
        if self.use_linear:
            x = self.proj_in(x)
        frame_idx = torch.arange(t, device=x.device).repeat(bt // t)       # (B*T,)
        emb = self.time_pos_embed(timestep_embedding(frame_idx, c, self.max_time_embed_period).to(x.dtype))
        emb = emb[:, None, :]                               # (B*T, 1, C)
        for block, mix_block in zip(self.transformer_blocks, self.time_stack):
            x = block(x, context=context)
            x_temporal = mix_block(x + emb, time_context, t)
            x = self.time_mixer(x, x_temporal, image_only_indicator)
        if self.use_linear:
            x = self.proj_out(x)
        x = x.transpose(1, 2).reshape(bt, -1, h, w)         # (B*T, H*W, C) -> (B*T, C, H, W)
        if not self.use_linear:
            x = self.proj_out(x)
        return x + x_in
