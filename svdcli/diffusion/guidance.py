"""Classifier-free guidance for video: the guidance scale rises linearly across the frames.

SVD's LinearPredictionGuider: D = D_u + w_t (D_c - D_u) with w = linspace(min, max, T), so the
first frame (which repeats the conditioning image) is barely guided and the last the most.
The conditional and unconditional branches run as ONE batched forward pass, uncond half first,
exactly as the official sampler does, so results match it to rounding.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

@dataclass(frozen=True)
class LinearPredictionGuider:
    """Per-frame guidance scale w_t = linspace(min_scale, max_scale, num_frames)[t]."""

    min_scale: float = 1.0
    max_scale: float = 2.5
    num_frames: int = 14

    def __post_init__(self):
        if self.num_frames < 1:
            raise ValueError("num_frames must be at least 1")

    def scales(self) -> torch.Tensor:
        """(T,) float32 scales, computed as the official code does (torch.linspace in float32)."""
        return torch.linspace(self.min_scale, self.max_scale, self.num_frames, dtype=torch.float32)

    @property
    def is_identity(self) -> bool:
        """w = 1 for every frame means D = D_c: the unconditional pass can be skipped."""
        return self.min_scale == 1.0 and self.max_scale == 1.0

    def combine(self, d_uncond: torch.Tensor, d_cond: torch.Tensor) -> torch.Tensor:
        """D = D_u + w_t (D_c - D_u) for video-major (B*T, ...) tensors."""
        t = self.num_frames
        if d_cond.shape[0] % t:
            raise ValueError(f"batch of {d_cond.shape[0]} frames is not a multiple of {t} frames")
        b = d_cond.shape[0] // t
        w = self.scales().to(d_cond.device, d_cond.dtype).repeat(b)  # (T,) -> (B*T,)
        w = w.reshape(-1, *([1] * (d_cond.ndim - 1)))  # (B*T, 1, 1, 1)
        return d_uncond + w * (d_cond - d_uncond)


def batch_conditions(cond: dict, uncond: dict) -> dict:
    """Concatenate uncond and cond along the batch axis, uncond first.

    Batches crossattn / vector / concat and any other tensor present in both (such as
    image_only_indicator); non-tensors (num_video_frames) pass through unchanged.
    """
    out = {}
    for key, value in cond.items():
        if isinstance(value, torch.Tensor) and key in uncond:
            out[key] = torch.cat([uncond[key], value])
        else:
            out[key] = value
    return out


def guided_denoiser(denoiser: Callable[..., torch.Tensor], guider: LinearPredictionGuider) -> Callable:
    """Wrap D(x, sigma, cond) into a guided D(x, sigma, cond=..., uncond=...) for the samplers."""

    def guided(x: torch.Tensor, sigma: torch.Tensor, *, cond: dict, uncond: dict) -> torch.Tensor:
        if guider.is_identity:
            return denoiser(x, sigma, cond)
        both = batch_conditions(cond, uncond)
        d = denoiser(torch.cat([x, x]), torch.cat([sigma, sigma]), both)  # (2*B*T, C, H, W)
        d_uncond, d_cond = d.chunk(2)
        return guider.combine(d_uncond, d_cond)

    return guided
