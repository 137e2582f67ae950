"""Tune-A-Video inference (sec. 4.3), the family's sampling methods (svdcli.families.base.Family):
a base file (untuned) or a delta file loaded, the --tuned delta applied, DDIM inversion of the source latents with the empty prompt
gives the starting noise (or random noise without a source), then DDIM sampling with the edited
prompt and classifier-free guidance.

DDIM (eta = 0) runs on the denoiser D in the sigma parametrisation (svdcli.diffusion.ddim), so
one loop serves every base: SD 2.1 (v) and eps bases on SD's DDIM timesteps
(`DiscreteVPSchedule.ddim_sigmas`, "leading", offset 1, ending at alpha_bar_0 as diffusers), and
our EDM image model on the Karras grid (eq. 5), where DDIM is the Euler step of the
probability-flow ODE and inversion runs it from sigma_min up to sigma_max.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

from svdcli.errors import SvdError
from svdcli.families.base import LoadedModel, SamplingInputs, TrainedRun
from svdcli.families.tune_a_video.base import Base, base_of, vp_schedule
from svdcli.families.tune_a_video.config import TAVConfig, TAVOptions


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


def load(family, header) -> TAVModel:
    """A base image file (untuned; `--tuned` applies a delta) or a delta file itself."""
    from svdcli.families.tune_a_video.delta import DELTA_FORMAT, apply_delta

    meta, delta = header.metadata, None
    own, seed, frames, size = TAVConfig(), 0, 8, (512, 512)
    if meta.get("format") == DELTA_FORMAT:
        run = TrainedRun.from_metadata(meta, default_family=family.name)
        own, seed, frames, size, delta = TAVConfig.from_dict(run.values), run.seed, run.frames, \
            (run.width, run.height), header.path
        base = base_of(own, seed, meta["base_path"])
    else:
        base = base_of(own, seed, header.path)
    if base.kind == "ours" and delta is None:
        size = (256, 256)
    model = tav_model(family, base, own.attention, seed, frames, size)
    if delta is not None:
        model.tuned = apply_delta(model.denoiser.net, delta, base.digest)
    return model


def sampling_defaults(family, model: TAVModel, options: TAVOptions):
    """A --tuned run samples at its own frame count and size."""
    if options.tuned is None:
        return model.defaults
    from svdcli.families.tune_a_video.delta import read_delta

    tuned = TrainedRun.from_metadata(read_delta(Path(options.tuned))[1], default_family=family.name)
    return replace(model.defaults, frames=tuned.frames, width=tuned.width, height=tuned.height,
                   trained_frames=tuned.frames)


def resolve_options(family, model: TAVModel, options: TAVOptions, image, warn) -> TAVOptions:
    from svdcli.families.tune_a_video.delta import apply_delta

    if image is not None:
        raise SvdError("tune_a_video edits a video by prompt: leave out --image (use --invert VIDEO)")
    if options.tuned is not None:
        model.tuned = apply_delta(model.denoiser.net, Path(options.tuned), model.base.digest)
    tuned = json.loads(model.tuned.get("train_config", "{}"))
    prompt = options.prompt or tuned.get("prompt")
    if not prompt:
        raise SvdError("tune_a_video needs --prompt (the edited text)")
    if options.invert is not None and not Path(options.invert).is_file():
        raise SvdError(f"--invert {options.invert}: no such video")
    # --invert reads the clip as the run was tuned on it: every frame_stride-th frame (runs saved
    # before the key existed tuned on consecutive frames)
    stride = int(tuned.get("frame_stride", 1)) if tuned else TAVConfig().frame_stride
    return replace(options, prompt=prompt, frame_stride=stride)


def sigmas(family, model: TAVModel, steps: int, device) -> torch.Tensor:
    return ddim_sigmas(model.base.prediction, steps, device)


def sampling_inputs(family, model: TAVModel, image, opts, device, dtype) -> SamplingInputs:
    from svdcli.families.tune_a_video.network import make_cond

    h, w = opts.height // 8, opts.width // 8
    noise = torch.randn(opts.frames, 4, h, w, generator=torch.Generator().manual_seed(opts.seed))
    context = text_context(model, [opts.family_options.prompt, ""], device)
    cond = make_cond(context[:1], opts.frames, model.base, (h, w))
    uncond = make_cond(context[1:], opts.frames, model.base, (h, w))
    notes = [] if model.tuned else ["no --tuned delta: sampling the inflated, untuned image model"]
    return SamplingInputs(noise.to(device), cond, uncond, fps=8.0, notes=notes)


def guided_denoiser(family, model: TAVModel, opts, autocast_dtype):
    return cfg_denoiser(model.denoiser, opts.frames, opts.max_cfg)


def sample(family, model: TAVModel, inputs, opts, denoiser, sigmas, callback) -> torch.Tensor:
    """DDIM from random noise, or from the DDIM inversion of --invert."""
    from svdcli.diffusion.samplers import prior_sample

    source = opts.family_options.invert
    if source is None:
        x = prior_sample(inputs.noise.float(), sigmas)
    else:
        video = read_clip(Path(source), opts.frames, opts.height, opts.width, opts.family_options.frame_stride)
        x0 = source_latents(model, video, inputs.noise.device)
        x = invert(model, x0, inputs.uncond, sigmas, opts.frames, callback)
    return run_ddim(model, x, denoiser, sigmas, inputs.cond, inputs.uncond, callback)


def sampling_steps(family, model: TAVModel, opts) -> int:
    inverted = opts.family_options.invert is not None
    return opts.steps * (2 if inverted else 1) - (1 if inverted and model.base.prediction == "edm" else 0)


def decode(family, model: TAVModel, x, opts):
    from svdcli.models.vae import SCALE_FACTOR

    vae = model.base.vae
    return vae.decode(x.to(next(vae.parameters()).dtype) / SCALE_FACTOR, opts.frames).clamp(-1.0, 1.0)


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
