"""VDM training (the family's training methods, svdcli.families.base.Family): the network built
from its config and saved with it, joint image-video batches, continuous-time cosine noise
levels; the eps / v loss is the denoiser's own (`VDMDenoiser`, objective "network").

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

import json
from pathlib import Path

import torch

from svdcli.families.base import TrainBatch

FORMAT = "svdcli-vdm"   # `format` metadata of the files `save` writes


def build(family, cfg, init: Path | None = None):
    from svdcli.families.vdm.sampling import build_denoiser

    denoiser = build_denoiser(cfg.family_config, cfg.seed)
    if init is not None:
        denoiser.load_state_dict(family.saved_state(init), strict=True)
    return denoiser


def encoders(family, cfg, device: str):
    """The frozen text tower (`text:`), or None."""
    from svdcli.families.vdm.text import build_text_tower

    own = cfg.family_config
    tower = build_text_tower(own.text, own.text_dim, cfg.seed)
    return None if tower is None else tower.to(device)


def save(family, path: Path, state, cfg, metadata: dict[str, str]) -> None:
    """The denoiser's state, the training config and the resolved network config (`net_config`),
    which loading rebuilds the network from."""
    from safetensors.torch import save_file

    net = json.dumps(cfg.family_config.net().to_dict())
    save_file({k: v.contiguous() for k, v in state.items()}, str(path),
              metadata={"format": FORMAT, "net_config": net, **metadata})


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
def prepare(family, video: torch.Tensor, meta: dict, text, cfg, gen: torch.Generator, device) -> TrainBatch:
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


def training_sigmas(family, n: int, cfg, gen: torch.Generator) -> torch.Tensor:
    """sigma(t) with t ~ U(0, 1), one per video."""
    from svdcli.diffusion.schedules import CosineSchedule

    own = cfg.family_config
    return CosineSchedule(own.logsnr_min, own.logsnr_max).sigma(torch.rand(n, generator=gen)).float()
