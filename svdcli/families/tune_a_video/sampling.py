"""Tune-A-Video inference (sec. 4.3): DDIM inversion of the source latents with the empty prompt
gives the starting noise (or random noise without a source), then DDIM sampling with the edited
prompt and classifier-free guidance.

DDIM (eta = 0) runs on the denoiser D in the sigma parametrisation (svdcli.diffusion.ddim), so
one loop serves every base: SD 2.1 (v) and eps bases on SD's DDIM timesteps
(`DiscreteVPSchedule.ddim_sigmas`, "leading", offset 1, ending at alpha_bar_0 as diffusers), and
our EDM image model on the Karras grid (eq. 5), where DDIM is the Euler step of the
probability-flow ODE and inversion runs it from sigma_min up to sigma_max.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from svdcli.errors import SvdError
from svdcli.families.base import LoadedModel
from svdcli.families.tune_a_video.base import Base, vp_schedule


@dataclass(kw_only=True)
class TAVModel(LoadedModel):
    base: Base
    denoiser: nn.Module                 # edm.Denoiser around the inflated UNet
    tuned: dict = field(default_factory=dict)   # metadata of the applied delta (prompt, step)

    def modules(self) -> list[nn.Module]:
        return [self.denoiser, self.base.vae, self.base.text]


GUIDANCE = 12.5     # the official configs' guidance_scale (D_u + 12.5 (D_c - D_u))
STEPS = 50          # the official num_inference_steps and num_inv_steps


def tav_model(family, base: Base, attention: str = "sparse_causal", seed: int = 0, frames: int = 8,
              size: tuple[int, int] = (512, 512)) -> TAVModel:
    """The inflated, untuned `base` ready to sample (`svd sample` defaults: the official ones)."""
    from svdcli.families.base import SamplingDefaults
    from svdcli.families.tune_a_video.network import build_denoiser

    defaults = SamplingDefaults("tune_a_video", frames=frames, steps=STEPS, min_cfg=GUIDANCE, max_cfg=GUIDANCE,
                                width=size[0], height=size[1], size_multiple=64, sampler="ddim")
    return TAVModel(family=family, defaults=defaults, kind=f"{base.kind} base ({base.prediction})", base=base,
                    denoiser=build_denoiser(base, attention, seed, train=False).eval())


def ddim_sigmas(prediction: str, steps: int, device) -> torch.Tensor:
    """The DDIM grid, descending: SD's timesteps for VP bases, Karras et al. eq. 5 for EDM."""
    if prediction == "edm":
        from svdcli.diffusion.schedules import karras_sigmas

        return karras_sigmas(steps, device=device)
    return vp_schedule().ddim_sigmas(steps, "leading", 1).to(device)


def text_context(model: TAVModel, prompts: list[str], device) -> torch.Tensor:
    return model.base.text(prompts).to(device).float()                       # (B, L, D)


def cfg_denoiser(denoiser: nn.Module, frames: int, scale: float):
    """D_u + s (D_c - D_u) with s = `scale` (diffusers' and the official code's guidance_scale;
    Ho & Salimans 2022, eq. 6, write it with w = s - 1), both branches in one batch."""

    def guided(x, sigma, *, cond, uncond, noise_sigma=None):
        both = {k: torch.cat([uncond[k], cond[k]]) for k in cond}
        xx, ss = torch.cat([x, x]), torch.cat([sigma, sigma])
        ns = torch.cat([noise_sigma, noise_sigma]) if noise_sigma is not None else None
        d_u, d_c = denoiser(xx, ss, both, frames, noise_sigma=ns).float().chunk(2)
        return d_u + scale * (d_c - d_u)

    return guided


def plain_denoiser(denoiser: nn.Module, frames: int):
    """D with one cond (the inversion's empty prompt)."""
    return lambda x, sigma, *, cond, noise_sigma=None: denoiser(x, sigma, cond, frames, noise_sigma=noise_sigma).float()


def read_clip(path: Path, frames: int, height: int, width: int, stride: int = 1) -> torch.Tensor:
    """Frames 0, stride, ..., (frames - 1) stride of a video (as `svd tune --frame-stride` packs
    them), cover-resized and centre-cropped: (T, 3, H, W) in [-1, 1]."""
    import numpy as np

    from svdcli.shards.frames import decode_mp4, resize_crop

    if not Path(path).is_file():
        raise SvdError(f"--invert {path}: no such video")
    needed = (frames - 1) * stride + 1
    pixels = decode_mp4(Path(path).read_bytes(), stop=needed)               # (N, H, W, 3) uint8
    if len(pixels) < needed:
        raise SvdError(f"--invert {path} has {len(pixels)} frames; {frames} frames at stride {stride} "
                       f"(the tuned run's frame_stride) need {needed}")
    pixels = resize_crop(np.asarray(pixels[:needed:stride]), height, width)
    return torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 127.5 - 1.0


@torch.no_grad()
def source_latents(model: TAVModel, video: torch.Tensor, device) -> torch.Tensor:
    """x0 = 0.18215 * VAE posterior mode of every frame (T, 4, h, w)."""
    from svdcli.models.vae import SCALE_FACTOR

    vae = model.base.vae
    dtype = next(vae.parameters()).dtype
    return SCALE_FACTOR * vae.encode(video.to(device, dtype)).float()


def invert(model: TAVModel, x0: torch.Tensor, uncond: dict, sigmas: torch.Tensor, frames: int,
           callback=None) -> torch.Tensor:
    """DDIM inversion (Song et al. 2021, sec. 4.3) of x0 with the empty prompt, up the grid that
    `sample_ddim` walks down; returns x at sigmas[0]."""
    from svdcli.diffusion.ddim import invert_ddim
    from svdcli.diffusion.scalings import from_vp

    up = sigmas[sigmas > 0].flip(0)
    # VP: the clean latent is z at alpha_bar_0, as diffusers' inversion takes it; EDM: x0 at sigma_min
    start = from_vp(x0, up[0]) if model.base.prediction != "edm" else x0
    label = "target" if model.base.prediction != "edm" else "current"
    return invert_ddim(plain_denoiser(model.denoiser, frames), start, up, label=label,
                       extra_args={"cond": uncond}, callback=callback)


def run_ddim(model: TAVModel, x: torch.Tensor, guided, sigmas: torch.Tensor, cond: dict, uncond: dict,
             callback=None) -> torch.Tensor:
    """DDIM (eta = 0) down the grid; VP latents are read back as z at the last level (to_vp)."""
    from svdcli.diffusion.ddim import sample_ddim
    from svdcli.diffusion.scalings import to_vp

    x = sample_ddim(guided, x, sigmas, extra_args={"cond": cond, "uncond": uncond}, callback=callback)
    return to_vp(x, sigmas[-1]) if model.base.prediction != "edm" else x
