"""What `svd sample` does with a VDM checkpoint (the family's sampling methods,
svdcli.families.base.Family): load it (the network rebuilt from the config the checkpoint
saved), check the options, draw the noise, and run the ancestral sampler on the cosine
schedule, plain or conditioned on an input video (`--extend N`: the next N frames by
reconstruction guidance or replacement; `--upsample K`: K x super-resolution by reconstruction
guidance). Decoding is the identity (pixel space).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from svdcli.diffusion.samplers import step_generator
from svdcli.errors import SvdError
from svdcli.families.base import LoadedModel, SamplingDefaults, SamplingInputs, TrainedRun
from svdcli.families.vdm.config import VDMConfig, VDMNetConfig, VDMOptions

DEFAULT_STEPS = 64
FPS = 8.0


@dataclass(kw_only=True)
class VDMModel(LoadedModel):
    denoiser: nn.Module             # VDMDenoiser
    text: nn.Module | None
    run: TrainedRun

    def modules(self) -> list[nn.Module]:
        return [self.denoiser] + ([self.text] if self.text is not None else [])


@dataclass
class VDMInputs(SamplingInputs):
    clip: torch.Tensor | None = None     # (T, 3, H, W) in [-1, 1]: the --input video at the model's size


def build_denoiser(own: VDMConfig, seed: int, net: VDMNetConfig | None = None):
    """The denoiser of `own`, its network `net` (default: what `own` resolves to) seeded by `seed`."""
    from svdcli.families.vdm.network import VDMDenoiser, VDMUNet

    torch.manual_seed(seed)
    return VDMDenoiser(VDMUNet(net or own.net()), own.parameterisation, own.logsnr_min, own.logsnr_max)


def saved_net_config(header, own: VDMConfig) -> VDMNetConfig:
    """The network config a checkpoint saved; files written before it was saved (no `net_config`)
    name a preset, resolved as it reads today."""
    saved = header.metadata.get("net_config")
    if saved is None:
        return own.net()
    try:
        return VDMNetConfig.from_dict(json.loads(saved))
    except (ValueError, TypeError) as exc:
        raise SvdError(f"{header.path}: its net_config metadata is not readable ({exc})") from None


def load(family, header) -> VDMModel:
    from svdcli.families.vdm.text import build_text_tower

    run = TrainedRun.from_metadata(header.metadata, default_family=family.name)
    own = VDMConfig.from_dict(run.values)
    net = saved_net_config(header, own)
    denoiser = build_denoiser(own, run.seed, net)
    state = family.saved_state(header.path)
    try:
        missing, unexpected = denoiser.load_state_dict(state, strict=False)
    except RuntimeError as exc:               # tensors of other shapes
        first = next((line.strip() for line in str(exc).splitlines() if "size mismatch" in line), str(exc)[:200])
        raise SvdError(f"{header.path} does not fit the VDM network its config describes ({first})") from None
    if missing or unexpected:
        raise SvdError(f"{header.path} does not fit the VDM network its config describes "
                       f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    factor = 2 ** (len(net.mults) - 1)
    defaults = SamplingDefaults("vdm", frames=run.frames, steps=DEFAULT_STEPS, min_cfg=1.0, max_cfg=1.0,
                                width=run.width, height=run.height, trained_frames=run.frames,
                                size_multiple=factor, sampler="ancestral")
    text = build_text_tower(own.text, own.text_dim, run.seed)
    return VDMModel(family=family, defaults=defaults, kind="vdm", denoiser=denoiser.eval(), text=text, run=run)


def resolve_options(family, model: VDMModel, o: VDMOptions, image, warn) -> VDMOptions:
    if image is not None:
        raise SvdError("family vdm is not conditioned on an image: leave out --image (use --input for a video)")
    if o.extend and o.upsample:
        raise SvdError("give either --extend or --upsample, not both")
    if (o.extend or o.upsample) and o.input is None:
        raise SvdError("--extend and --upsample need the video to continue or upsample: --input clip.mp4")
    if o.input is not None and not (o.extend or o.upsample):
        raise SvdError("--input is read for --extend N or --upsample K; give one of them")
    if o.input is not None and not Path(o.input).is_file():
        raise SvdError(f"--input video not found: {o.input}")
    if o.conditioning == "replacement" and o.upsample:
        raise SvdError("--upsample is reconstruction-guided only (replacement needs known pixels)")
    if o.prompt and model.text is None:
        raise SvdError("this vdm checkpoint was trained without text (text: none): leave out --prompt")
    return o


def sigmas(family, model: VDMModel, steps: int, device):
    """t = 1, (n-1)/n, ..., 1/n on the model's cosine schedule, then 0."""
    return model.denoiser.schedule.sigmas(steps).to(device)


def read_clip(path, size: tuple[int, int] | None) -> tuple[torch.Tensor, float]:
    """(T, 3, H, W) in [-1, 1] and the fps of a video file; `size` (width, height) resizes."""
    import av
    import cv2

    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            fps = float(stream.average_rate or FPS)
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    except (av.error.FFmpegError, IndexError) as exc:
        raise SvdError(f"cannot read {path} as a video: {exc}") from None
    if not frames:
        raise SvdError(f"{path} has no frames")
    if size is not None and (frames[0].shape[1], frames[0].shape[0]) != size:
        frames = [cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames]
    x = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    return x, fps


def sampling_inputs(family, model: VDMModel, image, opts, device, dtype) -> VDMInputs:
    from svdcli.diffusion.samplers import per_sample_noise

    fo = opts.family_options
    clip, fps, notes = None, FPS, []
    if fo.extend:
        clip, fps = read_clip(fo.input, (opts.width, opts.height))
    elif fo.upsample:
        clip, fps = read_clip(fo.input, None)
        h, w = (s * fo.upsample for s in clip.shape[2:])
        m = model.defaults.size_multiple
        if h % m or w % m:
            raise SvdError(f"--upsample {fo.upsample} of a {clip.shape[3]}x{clip.shape[2]} video gives "
                           f"{w}x{h}, not a multiple of {m}")
    noise = per_sample_noise([opts.seed], (3, opts.height, opts.width), frames=opts.frames, device=device)
    cond, uncond = {}, {}
    if model.text is not None:
        context = model.text([fo.prompt or ""]).float().to(device)   # (1, L, D)
        cond = {"context": context}
        uncond = {"context": torch.zeros_like(context)}
    if clip is not None:
        notes.append(f"conditioning on {clip.shape[0]} frames of {fo.input} ({fo.conditioning}, "
                     f"w_r {fo.guidance_weight:g})")
    return VDMInputs(noise, cond, uncond, fps=fps, notes=notes, clip=None if clip is None else clip.to(device))


def guided_denoiser(family, model: VDMModel, opts, autocast_dtype=None):
    """D(x, sigma, *, cond, uncond) of one video (all rows are its frames), with classifier-free
    guidance D_u + W (D_c - D_u) at W = --cfg when the model takes text.

    The paper (sec. 2, after Ho & Salimans 2022) writes the guided model as (1 + w) x_c - w x_u;
    that is this with W = 1 + w. `--cfg` keeps the convention every family's `--cfg` shares (and
    diffusers' guidance_scale): W = 1 is the conditional model alone, the paper's w = 0. The
    combination is linear, so guiding x_hat, eps or v is the same; the unconditional branch is
    the all-zero text context that caption dropout (`cond_dropout`) trains."""
    net, w = model.denoiser, opts.max_cfg

    def denoise(x, sigma, *, cond, uncond):
        frames = x.shape[0]
        rows = lambda c: {k: v.expand(frames, *v.shape[1:]) for k, v in c.items()}  # noqa: E731
        d = net(x.float(), sigma, rows(cond), frames)
        if not cond or w == 1.0:
            return d
        d_uncond = net(x.float(), sigma, rows(uncond), frames)
        return d_uncond + w * (d - d_uncond)

    return denoise


def extension_plan(n_new: int, window: int) -> list[int]:
    """New frames per window: each window holds K = window // 2 known frames and up to
    window - K new ones (fewer known frames when the input is shorter)."""
    per = window - window // 2
    return [min(per, n_new - i) for i in range(0, n_new, per)]


def sampling_steps(family, model, opts) -> int:
    fo = opts.family_options
    return opts.steps * (len(extension_plan(fo.extend, opts.frames)) if fo.extend else 1)


def sample(family, model: VDMModel, inputs: VDMInputs, opts, denoiser, sigmas: torch.Tensor, callback) -> torch.Tensor:
    """x (N, 3, H, W): an unconditional video, the input followed by its extension, or the
    input upsampled; `sigmas` from the cosine schedule."""
    from svdcli.diffusion.samplers import prior_sample, sample_ancestral

    fo = opts.family_options
    extra = {"cond": inputs.cond, "uncond": inputs.uncond}
    if inputs.clip is None:
        return sample_ancestral(denoiser, prior_sample(inputs.noise.float(), sigmas), sigmas, extra_args=extra,
                                callback=callback, generator=step_generator(opts.seed, 0))
    d = lambda x, sigma: denoiser(x, sigma, **extra)  # noqa: E731
    w_r = float(fo.guidance_weight)
    if fo.upsample:
        return upsample(d, inputs.clip, fo.upsample, sigmas, w_r, opts.seed, callback)
    return extend(d, inputs.clip, fo.extend, opts.frames, sigmas, fo.conditioning, w_r, opts.seed, callback)


def decode(family, model, x, opts):
    """Pixel space: the sample is the video."""
    return x.float().clamp(-1.0, 1.0)


def extend(d, clip: torch.Tensor, n_new: int, window: int, sigmas, method: str, w_r: float, seed: int,
           callback=None) -> torch.Tensor:
    """clip (T, 3, H, W) followed by n_new sampled frames, window by window (autoregressive)."""
    from svdcli.diffusion.samplers import per_sample_noise, prior_sample
    import svdcli.families.vdm.guidance as guidance

    frames = clip.float()
    for chunk, new in enumerate(extension_plan(n_new, window)):
        k = min(window // 2, frames.shape[0])
        x_a = frames[-k:]                                                     # (k, 3, H, W) known
        noise = per_sample_noise([seed + chunk], tuple(clip.shape[1:]), frames=k + new, device=clip.device)
        x = prior_sample(noise, sigmas)
        known = torch.arange(k + new, device=clip.device) < k
        gen = step_generator(seed, chunk)
        if method == "replacement":
            out = guidance.sample_replacement(d, x, sigmas, x_a, known, generator=gen, callback=callback)
        else:
            out = guidance.sample_guided(d, x, sigmas, x_a, guidance.known_frames(known), w_r=w_r, known=known,
                                         generator=gen, callback=callback)
        frames = torch.cat([frames, out[k:]])
    return frames


def upsample(d, clip: torch.Tensor, factor: int, sigmas, w_r: float, seed: int, callback=None) -> torch.Tensor:
    """clip (T, 3, h, w) -> (T, 3, factor h, factor w) whose factor x factor average pooling
    is guided toward the clip (reconstruction guidance with A = pooling, sec. 3.1)."""
    from svdcli.diffusion.samplers import per_sample_noise, prior_sample
    import svdcli.families.vdm.guidance as guidance

    t, c, h, w = clip.shape
    noise = per_sample_noise([seed], (c, h * factor, w * factor), frames=t, device=clip.device)
    return guidance.sample_guided(d, prior_sample(noise, sigmas), sigmas, clip.float(), guidance.downsampled(factor),
                                  w_r=w_r, generator=step_generator(seed, 0), callback=callback)
