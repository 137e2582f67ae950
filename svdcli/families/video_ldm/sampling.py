"""Video LDM sampling (Blattmann et al. 2023): text-to-video in one pass, long videos chunk
after chunk with the prediction model (Sec. 3.2), and temporal interpolation (Sec. 3.3).

Guidance: text guidance D = D(0) + s (D(text) - D(0)) inside each context branch, and on the
context (Sec. 3.2): D = D(no context) + w (D(context) - D(no context)); w = 0 and w = 1 return
the two branches themselves.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from svdcli.errors import SvdError
from svdcli.families.base import LoadedModel, SamplingDefaults, SamplingInputs, TrainedRun
from svdcli.families.video_ldm.network import CONTEXT_CHANNELS, context_channels

OPTION_DEFAULTS = {"prompt": None, "long": False, "context_frames": None, "context_guidance": 1.0,
                   "interpolate": None, "input": None}
FPS = 8.0
LATENT_SHAPE_C = 4


@dataclass(kw_only=True)
class VideoLDMModel(LoadedModel):
    denoiser: nn.Module        # ContextDenoiser
    vae: nn.Module
    encode: Callable           # svdcli.families.svd.sampling_conditioning.TrainedConditioning
    stage: str
    own: object                # VideoLDMConfig

    def modules(self) -> list[nn.Module]:
        return [self.denoiser, self.vae, *self.encode.modules]


def load(family, header) -> VideoLDMModel:
    from safetensors.torch import load_file

    from svdcli.families.svd.config import unet_config
    from svdcli.families.svd.encoders import build_encoders
    from svdcli.families.svd.sampling_conditioning import TrainedConditioning
    from svdcli.families.video_ldm.config import VideoLDMConfig
    from svdcli.families.video_ldm.network import ContextDenoiser, MaskedContextUNet
    from svdcli.models.unet import VideoUNet

    run = TrainedRun.from_metadata(header.metadata, default_family=family.name)
    if run.stage == "decoder":
        raise SvdError(f"{header.path} is a decoder finetune (a VAE, not a video model): sample a video "
                       f"model with it as the decoder, `svd sample --vae {header.path} ...`, or encode "
                       f"shards with it, `svd pack --latents {header.path}`")
    own = VideoLDMConfig.from_dict(run.values)
    net = MaskedContextUNet(VideoUNet(unet_config(own.model)))
    state = {k[len("net."):]: v for k, v in load_file(str(header.path)).items() if k.startswith("net.")}
    net.load_state_dict(state)
    encoders = build_encoders(own, run.seed)
    defaults = SamplingDefaults("video_ldm " + run.stage, frames=run.frames, steps=25, min_cfg=7.5, max_cfg=7.5,
                                width=run.width, height=run.height, trained_frames=run.frames)
    notes = [f"trained {header.metadata.get('step', '?')} steps, stage {run.stage}, {own.model} model"]
    return VideoLDMModel(family=family, defaults=defaults, kind="video_ldm", notes=notes,
                         denoiser=ContextDenoiser(net).eval(), vae=encoders.vae.eval(),
                         encode=TrainedConditioning(encoders, own.cond.mode), stage=run.stage, own=own)


def sampling_defaults(model: VideoLDMModel, options: dict) -> SamplingDefaults:
    """Chunked and interpolated videos are longer than a training clip by design."""
    if options.get("long") or options.get("interpolate"):
        from dataclasses import replace

        return replace(model.defaults, trained_frames=None)
    return model.defaults


def resolve_options(model: VideoLDMModel, options: dict, image, warn) -> dict:
    out = {**OPTION_DEFAULTS, **{k: v for k, v in options.items() if v is not None}}
    if image is not None:
        raise SvdError("video_ldm is text-to-video: leave out --image (use --prompt)")
    if out["long"] and out["interpolate"]:
        raise SvdError("--long and --interpolate are two uses of two models: give one")
    if out["long"]:
        if model.stage != "predict":
            raise SvdError(f"--long needs a prediction model (--stage predict), not a {model.stage} one")
        s = out["context_frames"] if out["context_frames"] is not None else model.own.max_context_frames
        if not 0 <= s < model.defaults.frames:
            raise SvdError(f"--context-frames must be below the {model.defaults.frames}-frame chunk")
        out["context_frames"] = s
    if out["interpolate"]:
        if model.stage != "interpolate":
            raise SvdError(f"--interpolate needs an interpolation model (--stage interpolate), not a {model.stage} one")
        k = model.own.interpolation_factor
        passes = round(math.log(out["interpolate"], k))
        if k ** passes != out["interpolate"] or passes < 1:
            raise SvdError(f"--interpolate must be a power of the model's factor {k} ({k}, {k * k}, ...)")
        if out["input"] is None:
            raise SvdError("--interpolate needs the keyframes: --input keyframes.mp4")
        out["passes"] = passes
        out["keyframes"], out["input_fps"] = read_video(out["input"])
        out["prompt"] = out["prompt"] or ""
    elif out["prompt"] is None and model.own.cond.mode == "t2v":
        raise SvdError('this checkpoint is text-to-video: pass --prompt "..."')
    return out


def read_video(path) -> tuple[torch.Tensor, float]:
    """Frames of a video file (T, 3, H, W) in [-1, 1] and its rate."""
    import av
    import numpy as np

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate or FPS)
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    if len(frames) < 2:
        raise SvdError(f"--input {path}: interpolation needs at least two keyframes")
    return torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 127.5 - 1.0, fps


# --- guidance -------------------------------------------------------------------------------
def guided_denoiser(model: VideoLDMModel, opts, autocast_dtype) -> Callable:
    """D(x, sigma, *, cond, uncond, context=None): text guidance s = --cfg, context guidance w."""
    from contextlib import nullcontext

    s, w = float(opts.max_cfg), float(opts.family_options.get("context_guidance", 1.0))
    device = next(model.denoiser.parameters()).device
    frames = lambda x: x.shape[0]  # noqa: E731 - one video per call: T = all rows

    def run(x, sigma, cond):
        ctx = torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype else nullcontext()
        with ctx:
            return model.denoiser(x, sigma, cond, frames(x)).float()

    def text_guided(x, sigma, cond, uncond, c_s):
        c, u = _with_context(cond, c_s), _with_context(uncond, c_s)
        if s == 1.0:
            return run(x, sigma, c)
        d_u = run(x, sigma, u)
        return d_u + s * (run(x, sigma, c) - d_u)

    def denoise(x, sigma, *, cond, uncond, context=None):
        if context is None:
            return text_guided(x, sigma, cond, uncond, None)
        if w == 1.0:
            return text_guided(x, sigma, cond, uncond, context)
        d_none = text_guided(x, sigma, cond, uncond, torch.zeros_like(context))
        if w == 0.0:
            return d_none
        return d_none + w * (text_guided(x, sigma, cond, uncond, context) - d_none)

    return denoise


def _with_context(cond: dict, c_s: torch.Tensor | None) -> dict:
    if c_s is None:
        return cond
    return {**cond, "concat": torch.cat([cond["concat"], c_s.to(cond["concat"].dtype)], dim=1)}


# --- inputs and loops -----------------------------------------------------------------------
def sampling_inputs(model: VideoLDMModel, image, opts, device, dtype) -> SamplingInputs:
    """Per-video (cond, uncond) (1, ...) and the first chunk's noise, from the seed."""
    o = opts.family_options
    f = model.vae.cfg.downsampling
    shape = (LATENT_SHAPE_C, opts.height // f, opts.width // f)
    probe = torch.zeros(1, 3, opts.height, opts.width, device=device)
    cond, uncond = model.encode(None, fps_id=0, motion_bucket_id=0, cond_aug=0.0, noise=probe, prompt=o["prompt"])
    for c in (cond, uncond):  # no micro-conditioning in Video LDM: zero, as in training (batch.py)
        if "vector" in c:
            c["vector"] = torch.zeros_like(c["vector"])
    gen = torch.Generator().manual_seed(int(opts.seed))
    noise = torch.randn(opts.frames, *shape, generator=gen)
    fps = o["input_fps"] * o["interpolate"] if o.get("interpolate") else FPS
    return SamplingInputs(noise.to(device), {k: v.float() for k, v in cond.items()},
                          {k: v.float() for k, v in uncond.items()}, fps=fps)


def _per_frame(cond: dict, t: int) -> dict:
    return {k: v.repeat_interleave(t, dim=0) for k, v in cond.items()}


def _generate(denoiser, noise, sigmas, cond, uncond, context, sampler: str, callback):
    """One clip of noise.shape[0] frames, with c_S `context` (or none)."""
    from svdcli.diffusion.samplers import SAMPLERS, prior_sample

    t = noise.shape[0]
    extra = {"cond": _per_frame(cond, t), "uncond": _per_frame(uncond, t), "context": context}
    return SAMPLERS[sampler](denoiser, prior_sample(noise.float(), sigmas), sigmas, extra_args=extra,
                             callback=callback)


def chunk_count(total: int, chunk: int, s: int) -> int:
    """Chunks of `chunk` frames to cover `total`: the first gives `chunk`, each next one chunk - s."""
    return 1 + max(0, math.ceil((total - chunk) / (chunk - s)))


def sample_long(model: VideoLDMModel, inputs, opts, denoiser, sigmas, callback) -> torch.Tensor:
    """Sec. 3.2: the first chunk from the prediction model with S = 0, then each next chunk with
    the last S generated frames as its first S (context) frames; (N, 4, h, w)."""
    t, s, total = model.defaults.frames, opts.family_options["context_frames"], opts.frames
    gen = torch.Generator().manual_seed(int(opts.seed))
    device = inputs.noise.device
    shape = inputs.noise.shape[1:]
    out: list[torch.Tensor] = []
    previous = None
    for k in range(chunk_count(total, t, s)):
        noise = torch.randn(t, *shape, generator=gen).to(device)
        mask = torch.zeros(t, device=device)
        known = torch.zeros(t, *shape, device=device)
        if previous is not None and s:
            mask[:s] = 1.0
            known[:s] = previous[-s:]
        x = _generate(denoiser, noise, sigmas, inputs.cond, inputs.uncond, context_channels(known, mask),
                      opts.sampler, callback)
        out.append(x if previous is None else x[s:])
        previous = x
    return torch.cat(out)[:total]


def interpolation_windows(n_keys: int, keys_per_window: int) -> list[tuple[int, int]]:
    """[start, end) keyframe windows sharing their boundary keyframe, covering 0..n_keys-1."""
    windows, start = [], 0
    while start < n_keys - 1:
        end = min(start + keys_per_window, n_keys)
        windows.append((start, end))
        start = end - 1
    return windows


def interpolate_once(model, keys: torch.Tensor, inputs, opts, denoiser, sigmas, gen, callback) -> torch.Tensor:
    """Sec. 3.3: K keyframe latents (K, 4, h, w) -> (k (K-1) + 1) frames, keyframes kept at every
    k-th frame; windows of the trained clip's keyframe count."""
    k = model.own.interpolation_factor
    per_window = (model.defaults.frames - 1) // k + 1
    pieces = []
    for a, b in interpolation_windows(keys.shape[0], per_window):
        t = k * (b - a - 1) + 1
        mask = torch.zeros(t, device=keys.device)
        mask[::k] = 1.0
        known = torch.zeros(t, *keys.shape[1:], device=keys.device)
        known[::k] = keys[a:b]
        noise = torch.randn(t, *keys.shape[1:], generator=gen).to(keys.device)
        x = _generate(denoiser, noise, sigmas, inputs.cond, inputs.uncond, context_channels(known, mask),
                      opts.sampler, callback)
        pieces.append(x if not pieces else x[1:])
    return torch.cat(pieces)


def sample_interpolated(model, inputs, opts, denoiser, sigmas, callback) -> torch.Tensor:
    """`passes` interpolation passes over the --input keyframes' latents."""
    from svdcli.models.vae import SCALE_FACTOR

    o = opts.family_options
    device = inputs.noise.device
    frames = torch.nn.functional.interpolate(o["keyframes"], size=(opts.height, opts.width), mode="area")
    vae_dtype = next(model.vae.parameters()).dtype
    keys = SCALE_FACTOR * model.vae.encode(frames.to(device, vae_dtype)).float()
    gen = torch.Generator().manual_seed(int(opts.seed))
    for _ in range(o["passes"]):
        keys = interpolate_once(model, keys, inputs, opts, denoiser, sigmas, gen, callback)
    return keys


def sampling_steps(model, opts) -> int:
    o = opts.family_options
    if o.get("long"):
        return opts.steps * chunk_count(opts.frames, model.defaults.frames, o["context_frames"])
    if o.get("interpolate"):
        k, n = model.own.interpolation_factor, o["keyframes"].shape[0]
        per_window, windows = (model.defaults.frames - 1) // k + 1, 0
        for _ in range(o["passes"]):
            windows += len(interpolation_windows(n, per_window))
            n = k * (n - 1) + 1
        return opts.steps * windows
    return opts.steps


def sample(model, inputs, opts, denoiser, sigmas, callback) -> torch.Tensor:
    o = opts.family_options
    if o.get("long"):
        return sample_long(model, inputs, opts, denoiser, sigmas, callback)
    if o.get("interpolate"):
        return sample_interpolated(model, inputs, opts, denoiser, sigmas, callback)
    context = None
    if model.stage in ("predict", "interpolate"):  # no frame given: the S = 0 branch
        context = context_channels(torch.zeros_like(inputs.noise), torch.zeros(inputs.noise.shape[0]).to(inputs.noise.device))
    return _generate(denoiser, inputs.noise, sigmas, inputs.cond, inputs.uncond, context, opts.sampler, callback)


def decode(model, x: torch.Tensor, opts) -> torch.Tensor:
    return model.vae.decode_diffusion_latents(x, x.shape[0], None)
