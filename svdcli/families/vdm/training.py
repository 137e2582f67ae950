"""VDM training: joint image-video batches, continuous-time cosine noise levels, eps / v loss.

- Joint training (Ho et al. 2022, sec. 3): each video of B clips gets n = round(image_ratio * T)
  independent images appended as extra frames, each a random frame of another clip of the
  batch (of the same clip when B = 1); `image_only_indicator` flags them so temporal attention
  lets each attend only to itself. An image shares its video's noise level.
- Noise: t ~ U(0, 1), z_t = alpha_t x + sigma_t eps on the truncated cosine schedule
  (`CosineSchedule`), i.e. x + sigma(t) eps in the samplers' sigma form.
- Loss: ||eps - eps_hat||^2 (Ho et al. 2020, eq. 14 in continuous time) or
  ||v - v_hat||^2 with v = alpha_t eps - sigma_t x (Salimans & Ho 2022, sec. 4), per video.
"""
from __future__ import annotations

import torch

from svdcli.families.base import TrainBatch


def joint_frames(video: torch.Tensor, n_images: int, gen: torch.Generator):
    """(B, T, C, H, W) -> ((B, T + n, C, H, W), indicator (B, T + n), source clip (B, n))."""
    b, t = video.shape[:2]
    if n_images == 0:
        return video, torch.zeros(b, t), torch.zeros(b, 0, dtype=torch.long)
    offset = torch.randint(1, b, (b, n_images), generator=gen) if b > 1 else torch.zeros(b, n_images, dtype=torch.long)
    source = (torch.arange(b)[:, None] + offset) % b                        # never the video itself when B > 1
    frame = torch.randint(0, t, (b, n_images), generator=gen)
    images = video[source, frame]                                           # (B, n, C, H, W)
    indicator = torch.cat([torch.zeros(b, t), torch.ones(b, n_images)], dim=1)
    return torch.cat([video, images], dim=1), indicator, source


@torch.no_grad()
def prepare(video: torch.Tensor, meta: dict, text, cfg, gen: torch.Generator, device) -> TrainBatch:
    """Loader batch (B, T, C, H, W) in [-1, 1] -> x0 (B*(T+n), 3, H, W), context, indicator."""
    own = cfg.family_config
    b, t = video.shape[:2]
    frames, indicator, source = joint_frames(video, round(own.image_ratio * t), gen)
    total = frames.shape[1]
    cond = {}
    if text is not None:
        captions = list(meta["caption"])
        owner = torch.cat([torch.arange(b)[:, None].expand(b, t), source], dim=1)   # (B, T + n) clip of each row
        keep = (torch.rand(b, total, generator=gen) >= own.cond_dropout)
        keep[:, :t] = keep[:, :1]                                       # a video's frames drop together
        context = text(captions).float().to(device)                      # (B, L, D)
        rows = context[owner.reshape(-1).to(device)]                      # (B*(T+n), L, D)
        cond["context"] = rows * keep.reshape(-1, 1, 1).to(device)       # dropped: zeros, the uncond branch
    x0 = frames.reshape(b * total, *frames.shape[2:]).to(device)
    return TrainBatch(x0, cond, total, indicator.to(device) if total > t else None)


def training_sigmas(n: int, cfg, gen: torch.Generator) -> torch.Tensor:
    """sigma(t) with t ~ U(0, 1), one per video."""
    from svdcli.diffusion.schedules import CosineSchedule

    own = cfg.family_config
    return CosineSchedule(own.logsnr_min, own.logsnr_max).sigma(torch.rand(n, generator=gen)).float()


def loss(denoiser, batch: TrainBatch, sigma: torch.Tensor, noise: torch.Tensor, parameterisation: str) -> torch.Tensor:
    """Per-video mean of ||target - F(z_t, t)||^2, target eps or v."""
    b = sigma.shape[0]
    sigma = sigma.to(batch.x0.device).repeat_interleave(batch.frames)          # (B,) -> (B*T,)
    s = sigma.reshape(-1, 1, 1, 1)
    x0 = batch.x0.float()
    x = x0 + s * noise
    f = denoiser(x, sigma, batch.cond, batch.frames, batch.image_only_indicator, raw=True)
    alpha, sigma_t = 1.0 / (1.0 + s**2).sqrt(), s / (1.0 + s**2).sqrt()       # VP coefficients of x
    target = noise if parameterisation == "eps" else alpha * noise - sigma_t * x0
    return ((f.float() - target) ** 2).reshape(b, -1).mean(dim=1)
