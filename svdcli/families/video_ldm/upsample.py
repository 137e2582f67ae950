"""The video upsampler (Blattmann et al. 2023, Sec. 3.4): SD 2.x's x4 upscaler with temporal
layers, video fine-tuned on patches and applied to whole frames.

The x4 upscaler's latents sit on the low-resolution pixel grid (its VAE downsamples by 4, latent
scale 0.08333); the UNet takes 7 channels, the noisy latent and the low-resolution frame
c = alpha_g x_low + s_g eps ("noise augmentation", the paper's c_tau_gamma = alpha x + sigma eps),
and the noise level g as its class label, so it learns to trust a clean input and to fix a noisy
one. g ~ U{0, ..., max_noise_level - 1} in training (the x4 upscaler's ImageConcatWithNoiseAugmentation,
its own scaled-linear schedule, betas 0.0001..0.02); sampling uses one level, 20 by default as
diffusers' StableDiffusionUpscalePipeline. Patches: one random crop per video, the same in every
frame; the low-resolution frames are the crop area-downsampled 4x (our choice: the paper does not
say how its low-resolution inputs were made).
"""
from __future__ import annotations

from dataclasses import replace
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F

from svdcli.errors import SvdError
from svdcli.families.base import TrainBatch

DEFAULT_NOISE_LEVEL = 20


def noise_schedule():
    """The low-resolution noise augmentation's schedule (the same betas as the upscaler's own)."""
    from svdcli.diffusion.schedules import DiscreteVPSchedule
    from svdcli.families.video_ldm.image_base import BETAS

    return DiscreteVPSchedule.scaled_linear(*BETAS["upscaler"])


def augment(low: torch.Tensor, level: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """c = sqrt(alpha_bar_g) x_low + sqrt(1 - alpha_bar_g) eps per row: the VP sample of x_low at
    noise level g (N,), i.e. to_vp(x_low + sigma_g eps, sigma_g)."""
    from svdcli.diffusion.scalings import to_vp

    sigma = noise_schedule().sigmas[level.long().cpu()].to(low.device, torch.float32)   # (N,)
    s = sigma.reshape(-1, 1, 1, 1)
    return to_vp(low + s * eps, sigma)


def random_patches(video: torch.Tensor, patch: int, gen: torch.Generator) -> torch.Tensor:
    """(B, T, C, H, W) -> (B, T, C, patch, patch): one random crop per video, every frame alike."""
    b, _, _, h, w = video.shape
    if not patch or (patch == h and patch == w):
        return video
    ys = torch.randint(0, h - patch + 1, (b,), generator=gen).tolist()
    xs = torch.randint(0, w - patch + 1, (b,), generator=gen).tolist()
    return torch.stack([v[..., y:y + patch, x:x + patch] for v, y, x in zip(video, ys, xs)])


@torch.no_grad()
def prepare_batch(video, meta, enc, cfg, gen, device) -> TrainBatch:
    """(B, T, 3, H, W) in [-1, 1] -> x0 = 0.08333 VAE latents of the high-resolution patches
    (B*T, 4, p/4, p/4); cond: text, the noise-augmented low-resolution patches (concat) and
    their noise level (the class label, `vector`)."""
    from svdcli.families.video_ldm.batch import text_embedding
    from svdcli.families.video_ldm.image_base import latent_scale

    own = cfg.family_config
    high = random_patches(video, own.upsample.patch, gen)
    b, t = high.shape[:2]
    frames = high.reshape(b * t, *high.shape[2:]).to(device)                     # (B*T, 3, p, p)
    f = enc.vae.cfg.downsampling
    low = F.interpolate(frames, scale_factor=1 / f, mode="area")                 # (B*T, 3, p/4, p/4)
    sample = cfg.data.posterior == "sample"
    gen_vae = gen if sample and str(device) == "cpu" else None
    x0 = latent_scale(own) * enc.vae.encode(frames, sample=sample, generator=gen_vae).float()
    level = torch.randint(0, own.upsample.max_noise_level, (b,), generator=gen).repeat_interleave(t)   # (B*T,)
    concat = augment(low, level, torch.randn(low.shape, generator=gen).to(device))
    keep = (torch.rand(b, generator=gen) >= own.cond.dropout) & (torch.rand(b, generator=gen) >= own.cond.text_dropout)
    captions = list(meta["caption"]) if own.cond.mode == "t2v" else [""] * b
    text = text_embedding(enc, captions, keep, own, device).repeat_interleave(t, dim=0)
    return TrainBatch(x0, {"crossattn": text, "concat": concat, "vector": level.float().to(device)}, t)


# --- sampling -------------------------------------------------------------------------------
def input_video(path) -> torch.Tensor:
    """The --input video (T, 3, h, w) in [-1, 1], read once per file version."""
    return _read(*_key(path))[0]


def _key(path) -> tuple[str, int]:
    p = Path(path)
    if not p.is_file():
        raise SvdError(f"--input {path}: no such file")
    return str(p.resolve()), p.stat().st_mtime_ns


@lru_cache(maxsize=2)
def _read(path: str, mtime: int):
    from svdcli.families.video_ldm.long_video import read_video

    return read_video(path, "upsampling")


def resolve_upsample(model, out):
    """--upsample F --input low.mp4 [--noise-level G] [--prompt ...] for a `--stage upsample` model."""
    f = model.vae.cfg.downsampling
    if model.stage != "upsample":
        raise SvdError(f"--upsample needs a video upsampler (--stage upsample), not a {model.stage} model")
    if not out.upsample:
        raise SvdError(f"this checkpoint is a video upsampler: pass --upsample {f} --input low.mp4")
    if out.upsample != f:
        raise SvdError(f"--upsample {out.upsample}: this upsampler's latents sit on the input's pixel grid "
                       f"and its VAE decodes {f}x larger, so the factor is {f}")
    if out.input is None:
        raise SvdError("--upsample needs the video to upsample: --input low.mp4")
    low = input_video(out.input)
    if low.shape[2] % 8 or low.shape[3] % 8:
        raise SvdError(f"--input {out.input}: {low.shape[3]}x{low.shape[2]} frames; the upsampler needs "
                       "width and height that are multiples of 8 (its UNet halves them three times)")
    top = model.own.upsample.max_noise_level
    level = DEFAULT_NOISE_LEVEL if out.noise_level is None else out.noise_level
    if not 0 <= level < top:
        raise SvdError(f"--noise-level {level}: this upsampler was trained on levels 0 to {top - 1}")
    return replace(out, noise_level=level, low_res=low, input_fps=_read(*_key(out.input))[1], prompt=out.prompt or "")


def window_count(frames: int, window: int) -> int:
    return -(-frames // window)


def sample_upsampled(model, inputs, opts, denoiser, sigmas, callback) -> torch.Tensor:
    """The --input frames in windows of the trained clip length, each conditioned on its
    noise-augmented low-resolution frames; (N, 4, h, w) latents on the input's pixel grid."""
    from svdcli.families.video_ldm.clip_loop import generate

    o = opts.family_options
    device = inputs.noise.device
    low = o.low_res.to(device)                                                # (N, 3, h, w)
    gen = torch.Generator().manual_seed(int(opts.seed) + 1)                       # the augmentation's draws
    level = torch.full((low.shape[0],), float(o.noise_level), device=device)
    concat = augment(low, level, torch.randn(low.shape, generator=gen).to(device))
    t, out = model.defaults.frames, []
    for a in range(0, low.shape[0], t):
        b = min(a + t, low.shape[0])
        extra = {"concat": concat[a:b].to(inputs.cond["crossattn"].dtype), "vector": level[a:b]}
        cond = {**{k: v.repeat_interleave(b - a, dim=0) for k, v in inputs.cond.items()}, **extra}
        uncond = {**{k: v.repeat_interleave(b - a, dim=0) for k, v in inputs.uncond.items()}, **extra}
        out.append(generate(denoiser, inputs.noise[a:b], sigmas, cond, uncond, None, opts.sampler, callback))
    return torch.cat(out)
