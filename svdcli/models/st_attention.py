"""Attention over frames for inflated image models (Tune-A-Video, Wu et al. 2023, sec. 4.1).

Tensors are video-major token rows `(B*T, N, C)`: row b*T + t holds the N spatial tokens of frame
t of video b, as the image UNet's transformer blocks see them.

- `SparseCausalAttention`: the image model's spatial self-attention made spatio-temporal
  (ST-Attn, eq. 2): queries from frame i, keys and values from frame 0 and frame i-1
  (frame 0 attends to itself), cost O(2 m N^2) instead of O((m N)^2) for m frames.
- `FullSTAttention`: every frame attends to every token of its video, O((m N)^2), the dense
  alternative the paper compares against (for the benchmark).
- `TemporalAttention`: the new layer, self-attention over the frames at each spatial position,
  its output projection zeroed so it starts as the identity (the residual branch adds 0).
Both ST variants reuse the image layer's own `to_q`, `to_k`, `to_v`, `to_out` (same parameter
names), so the image weights load unchanged.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from svdcli.models.attention import CrossAttention


def previous_frames(t: int, device=None) -> torch.Tensor:
    """Index of frame i-1 for every frame i, with frame 0 paired with itself (T,)."""
    return (torch.arange(t, device=device) - 1).clamp(min=0)


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    b, n, _ = x.shape
    return x.reshape(b, n, heads, -1).transpose(1, 2)        # (b, n, heads*d) -> (b, heads, n, d)


def _merge(x: torch.Tensor) -> torch.Tensor:
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)            # (b, heads, n, d) -> (b, n, heads*d)


class SparseCausalAttention(CrossAttention):
    """ST-Attn (Tune-A-Video eq. 2): Q = W^Q z_i, K = W^K [z_0; z_{i-1}], V = W^V [z_0; z_{i-1}].

    For frame 0 the keys are [z_0; z_0]: softmax over a duplicated key set gives the same
    weights per distinct token, so frame 0 gets the image model's self-attention exactly.
    """

    @classmethod
    def inflate(cls, attn: CrossAttention) -> "SparseCausalAttention":
        """The image layer `attn` itself, now attending across frames (same parameters)."""
        attn.__class__ = cls
        return attn

    def forward(self, x: torch.Tensor, num_frames: int = 1) -> torch.Tensor:
        bt, n, _ = x.shape
        t = num_frames
        q, k, v = self.to_q(x), self.to_k(x), self.to_v(x)                   # (B*T, N, C)
        k, v = (self._first_and_previous(z, t) for z in (k, v))              # (B*T, 2N, C)
        out = F.scaled_dot_product_attention(_heads(q, self.heads), _heads(k, self.heads), _heads(v, self.heads))
        return self.to_out(_merge(out))

    @staticmethod
    def _first_and_previous(z: torch.Tensor, t: int) -> torch.Tensor:
        bt, n, c = z.shape
        z = z.reshape(bt // t, t, n, c)                                       # (B, T, N, C)
        first = z[:, :1].expand(-1, t, -1, -1)
        previous = torch.cat([z[:, :1], z[:, :-1]], dim=1)                  # frame max(i-1, 0); slices, not a gather
        return torch.cat([first, previous], dim=2).reshape(bt, 2 * n, c)     # (B*T, 2N, C)


class FullSTAttention(CrossAttention):
    """Dense spatio-temporal attention: every token attends to all T*N tokens of its video."""

    @classmethod
    def inflate(cls, attn: CrossAttention) -> "FullSTAttention":
        attn.__class__ = cls
        return attn

    def forward(self, x: torch.Tensor, num_frames: int = 1) -> torch.Tensor:
        bt, n, c = x.shape
        t = num_frames
        video = x.reshape(bt // t, t * n, c)                                  # (B*T, N, C) -> (B, T*N, C)
        out = CrossAttention.forward(self, video)
        return out.reshape(bt, n, -1)


class TemporalAttention(nn.Module):
    """Pre-norm self-attention over frames at each position (`norm_temp`, `attn_temp` in the
    paper's code), output projection zero-initialised: the inflated model starts as the image model."""

    def __init__(self, dim: int, heads: int, dim_head: int):
        super().__init__()
        self.norm_temp = nn.LayerNorm(dim)
        self.attn_temp = CrossAttention(dim, heads, dim_head)
        nn.init.zeros_(self.attn_temp.to_out[0].weight)
        nn.init.zeros_(self.attn_temp.to_out[0].bias)

    def forward(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        """x (B*T, N, C) -> the residual update (B*T, N, C)."""
        bt, n, c = x.shape
        t = num_frames
        h = x.reshape(bt // t, t, n, c).transpose(1, 2).reshape(-1, t, c)    # (B*T, N, C) -> (B*N, T, C)
        h = self.attn_temp(self.norm_temp(h))
        return h.reshape(bt // t, n, t, c).transpose(1, 2).reshape(bt, n, c)  # back to (B*T, N, C)
