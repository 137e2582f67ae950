"""One-shot tuning (Tune-A-Video sec. 4.2) as a training stage: the one clip's latents, its
prompt, the base's own noise levels and loss.

The loss is the base's: for an eps base ||eps_hat - eps||^2 (the paper's, eq. 1), for a v base
||v_hat - v||^2, for our EDM image model EDM eq. 8. In the sigma parametrisation (x = x0 + sigma
eps) all three are lambda(sigma) ||D(x) - x0||^2 with lambda = 1 / sigma^2 (eps, since
eps_hat - eps = -(D - x0) / sigma) or (1 + sigma^2) / sigma^2 (v: v_hat - v = -(D - x0) /
s_t with s_t = sigma / sqrt(1 + sigma^2); EDM with sigma_data = 1, eq. 8).
"""
from __future__ import annotations

import torch

from svdcli.families.base import TrainBatch


@torch.no_grad()
def prepare(video: torch.Tensor, meta: dict, enc, cfg, gen: torch.Generator, device) -> TrainBatch:
    """(B, T, C, H, W) in [-1, 1] -> x0 = 0.18215 VAE latents (B*T, 4, h, w), cond of the prompt."""
    from svdcli.families.tune_a_video.network import make_cond
    from svdcli.models.vae import SCALE_FACTOR

    b, t = video.shape[:2]
    if cfg.data.latents:
        x0 = meta["latents"].reshape(b * t, *meta["latents"].shape[2:]).to(device).float()
    else:
        frames = video.reshape(b * t, *video.shape[2:]).to(device)      # (B, T, C, H, W) -> (B*T, C, H, W)
        sample = cfg.data.posterior == "sample"
        x0 = SCALE_FACTOR * enc.base.vae.encode(frames, sample=sample, generator=gen if sample and str(device) == "cpu" else None)
    context = enc.base.text([cfg.family_config.prompt] * b).float()      # (B, L, D)
    return TrainBatch(x0.float(), make_cond(context, t, enc.base, x0.shape[-2:]), t)


def training_sigmas(n: int, cfg, gen: torch.Generator, prediction: str) -> torch.Tensor:
    """EDM base: ln sigma ~ N(P_mean, P_std^2); VP base: sigma of t ~ U{0, ..., 999} (DDPM training)."""
    if prediction == "edm":
        from svdcli.diffusion.edm import sample_sigmas_lognormal

        return sample_sigmas_lognormal(n, cfg.noise.p_mean, cfg.noise.p_std, generator=gen)
    from svdcli.families.tune_a_video.base import vp_schedule

    schedule = vp_schedule()
    t = torch.randint(0, schedule.num_timesteps, (n,), generator=gen)
    return schedule.sigmas[t].float()


def loss_weight(sigma: torch.Tensor, prediction: str) -> torch.Tensor:
    """lambda(sigma) that makes ||D - x0||^2 the base's own loss (module docstring)."""
    return 1.0 / sigma**2 if prediction == "eps" else (sigma**2 + 1.0) / sigma**2


def loss(denoiser, batch: TrainBatch, sigma: torch.Tensor, noise: torch.Tensor, prediction: str) -> torch.Tensor:
    """Per-video loss (B,): lambda(sigma) ||D(x0 + sigma n, sigma) - x0||^2, one sigma per video."""
    x0, t = batch.x0, batch.frames
    b = x0.shape[0] // t
    s = sigma.to(x0.device, torch.float32).repeat_interleave(t).reshape(-1, 1, 1, 1)   # (B,) -> (B*T, 1, 1, 1)
    denoised = denoiser(x0 + noise * s, s.flatten(), batch.cond, t)
    per_frame = loss_weight(s, prediction) * (denoised.float() - x0.float()) ** 2
    return per_frame.reshape(b, -1).mean(dim=1)
