"""One-shot tuning (Tune-A-Video sec. 4.2) as a training stage, the family's training methods
(svdcli.families.base.Family): the base inflated, the one clip's latents, its prompt, the base's
own noise levels, the tuned tensors saved as a delta.

The loss is the base's, the denoiser's own (`edm.Denoiser.loss`): for an eps base
||eps_hat - eps||^2 (the paper's, eq. 1), for a v base ||v_hat - v||^2, for our EDM image model
EDM eq. 8. In the sigma parametrisation (x = x0 + sigma eps) all three are
lambda(sigma) ||D(x) - x0||^2 with lambda = 1 / c_out^2: 1 / sigma^2 (eps, since
eps_hat - eps = -(D - x0) / sigma) or (1 + sigma^2) / sigma^2 (v: v_hat - v = -(D - x0) /
s_t with s_t = sigma / sqrt(1 + sigma^2); EDM with sigma_data = 1, eq. 8).
"""
from __future__ import annotations

from pathlib import Path

import torch

from svdcli.families.base import TrainBatch
from svdcli.families.tune_a_video.base import base_of


class TAVEncoders:
    """The frozen parts of tuning: the base's VAE and text tower."""

    def __init__(self, base):
        self.base = base

    def to(self, device) -> "TAVEncoders":
        self.base.vae.to(device)
        self.base.text.to(device)
        return self


def build(family, cfg, init: Path | None = None):
    from svdcli.families.tune_a_video.network import build_denoiser

    own = cfg.family_config
    return build_denoiser(base_of(own, cfg.seed, init), own.attention, cfg.seed)


def encoders(family, cfg, device: str):
    return TAVEncoders(base_of(cfg.family_config, cfg.seed)).to(device)


def training_vae(family, encoders):
    return encoders.base.vae


@torch.no_grad()
def prepare(family, video: torch.Tensor, meta: dict, enc, cfg, gen: torch.Generator, device) -> TrainBatch:
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


def training_sigmas(family, n: int, cfg, gen: torch.Generator) -> torch.Tensor:
    """EDM base: ln sigma ~ N(P_mean, P_std^2); VP base: sigma of t ~ U{0, ..., 999} (DDPM training)."""
    if base_of(cfg.family_config, cfg.seed).prediction == "edm":
        from svdcli.diffusion.edm import sample_sigmas_lognormal

        return sample_sigmas_lognormal(n, cfg.noise.p_mean, cfg.noise.p_std, generator=gen)
    from svdcli.families.tune_a_video.base import vp_schedule

    schedule = vp_schedule()
    t = torch.randint(0, schedule.num_timesteps, (n,), generator=gen)
    return schedule.sigmas[t].float()


def save(family, path: Path, state, cfg, metadata: dict[str, str]) -> None:
    """The delta file: tuned tensors only, with the base's sha256 (delta.py)."""
    from svdcli.families.tune_a_video.delta import save_delta

    base = base_of(cfg.family_config, cfg.seed)
    unet = {k[len("net."):]: v for k, v in state.items() if k.startswith("net.")}
    save_delta(path, unet, base.digest, str(base.path), metadata)


def saved_state(family, path: Path):
    """The whole denoiser state: the base inflated, the delta applied."""
    from svdcli.families.base import read_header

    return family.load(read_header(path)).denoiser.state_dict()
