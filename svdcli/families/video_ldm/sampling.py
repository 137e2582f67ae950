"""Video LDM sampling (Blattmann et al. 2023), the family's sampling methods
(svdcli.families.base.Family): text-to-video in one pass, long videos chunk after
chunk with the prediction model (Sec. 3.2), temporal interpolation (Sec. 3.3) and the video
upsampler (Sec. 3.4); the loops are in long_video.py and upsample.py.

Everything runs in the frozen image model's own parameterisation (image_base.py): an SD 2.x
model on SD's DDIM timesteps (leading spacing, offset 1, ending at alpha_bar_0, as diffusers'
DDIMScheduler configured like SD 2.x; Euler on that grid is DDIM with eta = 0), returning the VP
latent z at the last level as diffusers does; our EDM model on the Karras grid to sigma = 0.

Guidance: text guidance D = D(u) + s (D(text) - D(u)) inside each context branch, with u the
image model's unconditional text (SD: the empty prompt; ours: zeros), and on the context
(Sec. 3.2): D = D(no context) + w (D(context) - D(no context)); w = 0 and w = 1 return the two
branches themselves.
"""
from __future__ import annotations

import math
import json
from dataclasses import dataclass, replace
from typing import Callable

import torch
from torch import nn

from svdcli.errors import SvdError
from svdcli.families.base import LoadedModel, SamplingDefaults, SamplingInputs, TrainedRun
from svdcli.families.video_ldm.clip_loop import FPS, generate
from svdcli.families.video_ldm.config import VideoLDMOptions
from svdcli.families.video_ldm.network import context_channels

MICRO_DEFAULTS = {"fps_id": 6, "motion_bucket_id": 127}   # `svd sample`'s, for our image stage's vector


@dataclass(kw_only=True)
class VideoLDMModel(LoadedModel):
    denoiser: nn.Module        # svdcli.diffusion.edm.Denoiser(MaskedContextUNet, the image model's scaling)
    vae: nn.Module
    encoders: object           # svdcli.families.svd.encoders.Encoders (VAE and text tower)
    stage: str
    own: object                # VideoLDMConfig

    def modules(self) -> list[nn.Module]:
        text = self.encoders.embed_text
        return [self.denoiser, self.vae, *([text] if isinstance(text, nn.Module) else [])]


def load(family, header) -> VideoLDMModel:
    from safetensors.torch import load_file

    from svdcli.diffusion.edm import Denoiser
    from svdcli.families.video_ldm.config import VideoLDMConfig
    from svdcli.families.video_ldm.image_base import build_encoders, is_sd, layout, scaling
    from svdcli.families.video_ldm.network import MaskedContextUNet
    from svdcli.models.unet import VideoUNet

    run = TrainedRun.from_metadata(header.metadata, default_family=family.name)
    if run.stage == "decoder":
        raise SvdError(f"{header.path} is a decoder finetune (a VAE, not a video model): sample a video "
                       f"model with it as the decoder, `svd sample --vae {header.path} ...`, or encode "
                       f"shards with it, `svd pack --latents {header.path}`")
    own = VideoLDMConfig.from_dict(run.values)
    net = MaskedContextUNet(VideoUNet(saved_network_config(header, own)))
    state = {k[len("net."):]: v for k, v in load_file(str(header.path)).items() if k.startswith("net.")}
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:               # missing tensors, or tensors of other shapes
        first = next((line.strip() for line in str(exc).splitlines()[1:] if line.strip()), str(exc)[:200])
        raise SvdError(f"{header.path} does not fit the Video LDM network its config describes ({first})") from None
    encoders = build_encoders(own, run.seed)
    upscaler = layout(own) == "upscaler"
    defaults = SamplingDefaults("video_ldm " + run.stage, frames=run.frames, steps=50 if is_sd(own) else 25,
                                min_cfg=9.0 if upscaler else 7.5, max_cfg=9.0 if upscaler else 7.5,
                                width=run.width, height=run.height, trained_frames=run.frames)
    notes = [f"trained {header.metadata.get('step', '?')} steps, stage {run.stage}, over {own.model}"]
    return VideoLDMModel(family=family, defaults=defaults, kind="video_ldm", notes=notes,
                         denoiser=Denoiser(net, scaling(own)).eval(), vae=encoders.vae.eval(), encoders=encoders,
                         stage=run.stage, own=own)


def saved_network_config(header, own):
    """The UNet config a checkpoint saved (`unet_config`); files written before it was saved name
    a preset, resolved as it reads today."""
    from svdcli.families.video_ldm.image_base import network_config
    from svdcli.models.config import UNetConfig

    saved = header.metadata.get("unet_config")
    if saved is None:
        return network_config(own)
    try:
        return UNetConfig.from_dict(json.loads(saved))
    except (ValueError, TypeError, KeyError) as exc:
        raise SvdError(f"{header.path}: its unet_config metadata is not readable ({exc})") from None


def sigmas(family, model: VideoLDMModel, steps: int, device) -> torch.Tensor:
    """The image model's sampling grid: SD's DDIM timesteps, or EDM's Karras levels."""
    from svdcli.diffusion.schedules import karras_sigmas
    from svdcli.families.video_ldm.image_base import schedule

    sched = schedule(model.own)
    return karras_sigmas(steps, device=device) if sched is None else sched.ddim_sigmas(steps).to(device)


def sampling_defaults(family, model: VideoLDMModel, options: VideoLDMOptions) -> SamplingDefaults:
    """Chunked and interpolated videos are longer than a training clip by design; an upsampled
    one is the --input video, 4 times larger."""
    if model.stage == "upsample" and options.upsample and options.input is not None:
        from svdcli.families.video_ldm.upsample import input_video

        frames, _, h, w = input_video(options.input).shape
        f = model.vae.cfg.downsampling
        return replace(model.defaults, frames=frames, height=h * f, width=w * f, trained_frames=None,
                       size_multiple=8 * f)
    if options.long or options.interpolate:
        return replace(model.defaults, trained_frames=None)
    return model.defaults


def resolve_options(family, model: VideoLDMModel, options: VideoLDMOptions, image, warn) -> VideoLDMOptions:
    if image is not None:
        raise SvdError("video_ldm is text-to-video: leave out --image (use --prompt)")
    if sum(bool(v) for v in (options.long, options.interpolate, options.upsample)) > 1:
        raise SvdError("--long, --interpolate and --upsample are uses of three models: give one")
    out = replace(options, **_micro_conditioning(model, options))
    if model.stage == "upsample" or out.upsample:
        from svdcli.families.video_ldm.upsample import resolve_upsample

        return resolve_upsample(model, out)
    if out.long:
        if model.stage != "predict":
            raise SvdError(f"--long needs a prediction model (--stage predict), not a {model.stage} one")
        s = out.context_frames if out.context_frames is not None else model.own.max_context_frames
        if not 1 <= s < model.defaults.frames:
            raise SvdError(f"--context-frames must be at least 1 and below the {model.defaults.frames}-frame chunk")
        out.context_frames = s
    if out.interpolate:
        _resolve_interpolation(model, out)
    elif out.prompt is None and model.own.cond.mode == "t2v":
        raise SvdError('this checkpoint is text-to-video: pass --prompt "..."')
    return out


def _micro_conditioning(model: VideoLDMModel, options: VideoLDMOptions) -> dict:
    """--fps-id / --motion-bucket feed our image stage's micro-conditioning; SD models have none."""
    if model.denoiser.net.cfg.adm_in_channels is None:
        for key, flag in (("fps_id", "--fps-id"), ("motion_bucket_id", "--motion-bucket")):
            if getattr(options, key) is not None:
                raise SvdError(f"{flag}: this Video LDM's image model ({model.own.model}) has no micro-conditioning")
        return {}
    return {key: value if getattr(options, key) is None else getattr(options, key)
            for key, value in MICRO_DEFAULTS.items()}


def _resolve_interpolation(model: VideoLDMModel, out: VideoLDMOptions) -> None:
    from svdcli.families.video_ldm.long_video import read_video

    if model.stage != "interpolate":
        raise SvdError(f"--interpolate needs an interpolation model (--stage interpolate), not a {model.stage} one")
    k = model.own.interpolation_factor
    passes = round(math.log(out.interpolate, k))
    if k ** passes != out.interpolate or passes < 1:
        raise SvdError(f"--interpolate must be a power of the model's factor {k} ({k}, {k * k}, ...)")
    if out.input is None:
        raise SvdError("--interpolate needs the keyframes: --input keyframes.mp4")
    out.passes = passes
    out.keyframes, out.input_fps = read_video(out.input)
    out.prompt = out.prompt or ""


# --- guidance -------------------------------------------------------------------------------
def guided_denoiser(family, model: VideoLDMModel, opts, autocast_dtype) -> Callable:
    """D(x, sigma, *, cond, uncond, context=None, image=False): text guidance s = --cfg, context
    guidance w; `image` runs the image model alone (one frame, temporal layers mixed out)."""
    from contextlib import nullcontext

    s, w = float(opts.max_cfg), float(opts.family_options.context_guidance)
    device = next(model.denoiser.parameters()).device

    def run(x, sigma, cond, image):
        ctx = torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype else nullcontext()
        indicator = torch.ones(1, x.shape[0], device=x.device) if image else None   # (B=1, T)
        with ctx:                                 # one video per call: T = all rows
            return model.denoiser(x, sigma, cond, x.shape[0], indicator).float()

    def text_guided(x, sigma, cond, uncond, c_s, image):
        c, u = _with_context(cond, c_s), _with_context(uncond, c_s)
        if s == 1.0:
            return run(x, sigma, c, image)
        d_u = run(x, sigma, u, image)
        return d_u + s * (run(x, sigma, c, image) - d_u)

    def denoise(x, sigma, *, cond, uncond, context=None, image=False):
        if context is None:
            return text_guided(x, sigma, cond, uncond, None, image)
        if w == 1.0:
            return text_guided(x, sigma, cond, uncond, context, image)
        d_none = text_guided(x, sigma, cond, uncond, torch.zeros_like(context), image)
        if w == 0.0:
            return d_none
        return d_none + w * (text_guided(x, sigma, cond, uncond, context, image) - d_none)

    return denoise


def _with_context(cond: dict, c_s: torch.Tensor | None) -> dict:
    if c_s is None:
        return cond
    c_s = c_s.to(cond["crossattn"].dtype)
    return {**cond, "concat": torch.cat([cond["concat"], c_s], dim=1) if "concat" in cond else c_s}


# --- inputs ---------------------------------------------------------------------------------
def text_conditions(model: VideoLDMModel, prompt: str | None, device) -> tuple[dict, dict]:
    """Per-video (cond, uncond) (1, ...): the prompt's embedding and the image model's
    unconditional text (SD: the empty prompt; ours: zeros)."""
    from svdcli.families.video_ldm.image_base import is_sd

    enc, own = model.encoders, model.own
    if own.cond.mode == "t2v":
        text = enc.embed_text([prompt or ""]).float()                          # (1, L, D)
        empty = enc.embed_text([""]).float() if is_sd(own) else torch.zeros_like(text)
    else:
        text = empty = torch.zeros(1, 1, enc.context_dim, device=device)
    cond, uncond = {"crossattn": text}, {"crossattn": empty}
    return cond, uncond


def _model_inputs(model: VideoLDMModel, opts, latent_hw, device) -> tuple[dict, dict]:
    """(cond, uncond) with the UNet's zero concat slot and micro-conditioning vector, if it has them."""
    from svdcli.models.conditioner import vector_embedding

    o, net = opts.family_options, model.denoiser.net.cfg
    cond, uncond = text_conditions(model, o.prompt, device)
    n_concat = net.in_channels - net.out_channels
    for c in (cond, uncond):
        if n_concat and model.stage != "upsample":
            c["concat"] = torch.zeros(1, n_concat, *latent_hw, device=device)
        if net.adm_in_channels is not None:
            c["vector"] = vector_embedding(o.fps_id, o.motion_bucket_id, 0.0, dim=net.adm_in_channels // 3).to(device)
    return cond, uncond


def sampling_inputs(family, model: VideoLDMModel, image, opts, device, dtype) -> SamplingInputs:
    """Per-video (cond, uncond) (1, ...) and the first clip's noise, from the seed."""
    o = opts.family_options
    f = model.vae.cfg.downsampling
    latent_hw = (opts.height // f, opts.width // f)
    cond, uncond = _model_inputs(model, opts, latent_hw, device)
    gen = torch.Generator().manual_seed(int(opts.seed))
    noise = torch.randn(opts.frames, model.denoiser.net.cfg.out_channels, *latent_hw, generator=gen)
    fps = o.input_fps * (o.interpolate or 1) if o.input_fps else FPS
    return SamplingInputs(noise.to(device), {k: v.float() for k, v in cond.items()},
                          {k: v.float() for k, v in uncond.items()}, fps=fps)


# --- loops ----------------------------------------------------------------------------------
def sample(family, model, inputs, opts, denoiser, sigmas, callback) -> torch.Tensor:
    from svdcli.families.video_ldm.long_video import sample_interpolated, sample_long
    from svdcli.families.video_ldm.upsample import sample_upsampled

    o = opts.family_options
    if o.upsample:
        return sample_upsampled(model, inputs, opts, denoiser, sigmas, callback)
    if o.long:
        return sample_long(model, inputs, opts, denoiser, sigmas, callback)
    if o.interpolate:
        return sample_interpolated(model, inputs, opts, denoiser, sigmas, callback)
    context = None
    if model.stage in ("predict", "interpolate"):  # no frame given: the S = 0 branch
        n = inputs.noise.shape[0]
        context = context_channels(torch.zeros_like(inputs.noise), torch.zeros(n, device=inputs.noise.device))
    return generate(denoiser, inputs.noise, sigmas, inputs.cond, inputs.uncond, context, opts.sampler, callback)


def sampling_steps(family, model, opts) -> int:
    from svdcli.families.video_ldm.long_video import chunk_count, interpolation_window_count
    from svdcli.families.video_ldm.upsample import window_count

    o = opts.family_options
    if o.upsample:
        return opts.steps * window_count(o.low_res.shape[0], model.defaults.frames)
    if o.long:
        return opts.steps * (1 + chunk_count(opts.frames, model.defaults.frames, o.context_frames))
    if o.interpolate:
        return opts.steps * interpolation_window_count(model, o)
    return opts.steps


def decode(family, model, x: torch.Tensor, opts) -> torch.Tensor:
    from svdcli.families.video_ldm.image_base import latent_scale

    return model.vae.decode(x / latent_scale(model.own), x.shape[0])
