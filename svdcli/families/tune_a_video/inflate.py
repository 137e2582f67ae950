"""Inflation of a text-to-image UNet into Tune-A-Video's video UNet (Wu et al. 2023, sec. 4.1),
in place, on our `VideoUNet` (the SVD layout, whose spatial layers are SD 2.1's):

- convolutions: the image UNet's 3x3 convs already run on `(B*T, C, H, W)` frame rows, i.e. as
  the paper's pseudo-3-D 1x3x3 kernels; SVD's temporal ResBlock branch (`time_stack`) and the
  transformer's temporal branch are removed, so every ResBlock is the image one;
- every transformer block: self-attention -> sparse-causal ST-Attn (eq. 2, same W^Q, W^K, W^V),
  then cross-attention and feed-forward as before, then a new temporal self-attention whose
  output projection is zero (svdcli.models.st_attention).
What tunes is what the official code's `trainable_modules` names (attn1.to_q, attn2.to_q,
attn_temp): the temporal attention's LayerNorm (`norm_temp`) stays at its init (1, 0) there, and here.
Before tuning, frame 0 of the inflated model is exactly the image model's output on that frame.
"""
from __future__ import annotations

import torch
from torch import nn

from svdcli.models.attention import BasicTransformerBlock, SpatialVideoTransformer
from svdcli.models.blocks import ResBlock, VideoResBlock
from svdcli.models.st_attention import FullSTAttention, SparseCausalAttention, TemporalAttention

ATTENTIONS = {"sparse_causal": SparseCausalAttention, "full": FullSTAttention}
TUNED_PARTS = ("attn1.to_q.", "attn2.to_q.", "temporal.attn_temp.")   # what one-shot tuning updates (sec. 4.2)


def is_tuned(name: str) -> bool:
    """ST-Attn W^Q, cross-attention W^Q and the temporal attention's projections (not its norm)."""
    return any(part in name for part in TUNED_PARTS)


class FrameResBlock(VideoResBlock):
    """The spatial (image) ResBlock alone, applied per frame."""

    def forward(self, x, emb, num_video_frames, image_only_indicator):
        return ResBlock.forward(self, x, emb)


class TAVTransformerBlock(BasicTransformerBlock):
    """ST-Attn, cross-attention, feed-forward, temporal attention (each pre-norm, residual)."""

    def forward(self, x: torch.Tensor, context: torch.Tensor, num_frames: int = 1) -> torch.Tensor:
        x = self.attn1(self.norm1(x), num_frames) + x
        x = self.attn2(self.norm2(x), context=context) + x
        x = self.ff(self.norm3(x)) + x
        return self.temporal(x, num_frames) + x


class TAVTransformer(SpatialVideoTransformer):
    """The image spatial transformer with Tune-A-Video blocks (no SVD temporal branch)."""

    def forward(self, x, context, num_video_frames, image_only_indicator=None, temporal_context=None):
        """`temporal_context` is accepted and unused: Tune-A-Video's temporal layer is self-attention."""
        bt, c, h, w = x.shape
        x_in = x
        x = self.norm(x)
        if not self.use_linear:
            x = self.proj_in(x)
        x = x.reshape(bt, -1, h * w).transpose(1, 2)        # (B*T, C, H, W) -> (B*T, H*W, C)
        if self.use_linear:
            x = self.proj_in(x)
        for block in self.transformer_blocks:
            x = block(x, context, num_video_frames)
        if self.use_linear:
            x = self.proj_out(x)
        x = x.transpose(1, 2).reshape(bt, -1, h, w)         # (B*T, H*W, C) -> (B*T, C, H, W)
        if not self.use_linear:
            x = self.proj_out(x)
        return x + x_in


def _drop(module: nn.Module, *names: str) -> None:
    for name in names:
        if hasattr(module, name):
            delattr(module, name)


def inflate_unet(unet: nn.Module, attention: str = "sparse_causal") -> nn.Module:
    """`unet` (a VideoUNet holding image weights) becomes the Tune-A-Video UNet, in place."""
    st_attention = ATTENTIONS[attention]
    for module in list(unet.modules()):
        if isinstance(module, VideoResBlock):
            _drop(module, "time_stack", "time_mixer")
            module.__class__ = FrameResBlock
        elif isinstance(module, SpatialVideoTransformer):
            _drop(module, "time_stack", "time_pos_embed", "time_mixer")
            module.__class__ = TAVTransformer
            for block in module.transformer_blocks:
                attn = block.attn1
                st_attention.inflate(attn)
                block.temporal = TemporalAttention(attn.to_q.in_features, attn.heads,
                                                   attn.to_q.out_features // attn.heads)
                block.__class__ = TAVTransformerBlock
    return unet


def image_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The image-model tensors of a UNet state (SVD temporal layers and label_emb aside kept out)."""
    from svdcli.families.svd.inflate import is_temporal

    return {k: v for k, v in state.items() if not is_temporal(k)}


def set_trainable(unet: nn.Module) -> list[str]:
    """Freeze everything but the tuned parts; returns the names that train."""
    names = []
    for name, p in unet.named_parameters():
        p.requires_grad_(is_tuned(name))
        if p.requires_grad:
            names.append(name)
    return names
