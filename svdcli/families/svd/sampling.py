"""SVD sampling, as the official `simple_video_sample.py` does it: the family's sampling methods
(svdcli.families.base.Family; `load` is loading.py's).

Family options (`SVDOptions`, beyond the common frames, steps, guidance, size, seed): `fps_id`
(the output plays at fps_id + 1), `motion_bucket_id`, `cond_aug` (noise on the conditioning
image), `prompt` (text-conditioned checkpoints), `temporal_prompt` (their temporal
cross-attention only, SVD paper sec. 6.4; default: `prompt`), `lora` ([(file, scale), ...] LoRAs
applied to the UNet, svdcli.families.svd.lora), `decode_chunk` (frames per temporal-VAE call),
`model` (svd or svd_xt: whose defaults) and `elevation` (a multi-view checkpoint: the camera
elevation of the input view, in degrees; multiview.py). Phases: conditioning (CLIP image
embedding, VAE latent of the noised image, micro-conditioning vector), sampling (linear
per-frame guidance with cond and uncond in one batch), decoding (temporal VAE, `decode_chunk`
frames a call).
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from svdcli.errors import SvdError
from svdcli.families.base import SamplingInputs
from svdcli.families.svd.config import SVDOptions
from svdcli.families.svd.loading import load  # noqa: F401 - the family's load
from svdcli.families.svd.presets import ModelDefaults, preset

NEEDS_INPUT = "give a conditioning image with --image (or --prompt for a text-conditioned checkpoint)"


def sampling_defaults(family, model, options: SVDOptions) -> ModelDefaults:
    """The checkpoint's defaults, or those of the preset `model` names (svd, svd_xt)."""
    return preset(options.model) if options.model else model.defaults


def resolve_options(family, model, options: SVDOptions, image, warn: Callable[[str], None]) -> SVDOptions:
    """The SVD options checked (LoRAs against the base model) and `decode_chunk` filled; says
    what training never saw."""
    from svdcli.families.svd.lora import resolve_loras

    if options.temporal_prompt is not None and options.prompt is None:
        raise SvdError("--temporal-prompt goes with --prompt (the spatial layers' text)")
    lora = resolve_loras(model, options.lora or [])
    if image is None and options.prompt is None:
        raise SvdError(NEEDS_INPUT)
    if model.multiview and options.elevation is None:
        raise SvdError("this multi-view checkpoint is conditioned on the camera elevation of the input view: "
                       "pass --elevation DEGREES (e.g. 10 for a camera slightly above the object)")
    if not model.multiview and options.elevation is not None:
        raise SvdError("--elevation conditions multi-view checkpoints (`svd train --stage multiview`); "
                       "this one is not")
    if options.motion_bucket_id > 255:
        warn("note: motion buckets above 255 were never seen in training")
    decode_chunk = options.decode_chunk or sampling_defaults(family, model, options).decode_chunk
    return replace(options, lora=lora, decode_chunk=decode_chunk)


def guided_denoiser(family, model, opts, autocast_dtype):
    """The EDM v-denoiser of the UNet with exactly the asked LoRAs (none: the base model) and
    linear per-frame guidance."""
    from svdcli.families.svd.lora import set_loras

    set_loras(model, opts.family_options.lora)
    return guided_video_denoiser(model.unet, opts.frames, min_cfg=opts.min_cfg, max_cfg=opts.max_cfg,
                                 autocast_dtype=autocast_dtype)


def decode(family, model, x, opts):
    return decode_latents(model.vae, x, opts.frames, opts.family_options.decode_chunk)


def guided_video_denoiser(unet: torch.nn.Module, num_frames: int, *, min_cfg: float, max_cfg: float,
                          autocast_dtype: torch.dtype | None = None) -> Callable:
    """D(x, sigma, cond=, uncond=) for the samplers: EDM v-denoiser + linear per-frame guidance."""
    from svdcli.diffusion.edm import Denoiser
    from svdcli.diffusion.guidance import LinearPredictionGuider, guided_denoiser

    denoiser = Denoiser(unet)
    guider = LinearPredictionGuider(min_cfg, max_cfg, num_frames)
    device = next(unet.parameters()).device

    def run(x: torch.Tensor, sigma: torch.Tensor, cond: dict) -> torch.Tensor:
        # the network may run in half precision; the sampler state x stays float32
        ctx = torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype else nullcontext()
        indicator = torch.zeros(x.shape[0] // num_frames, num_frames, device=x.device)
        with ctx:
            d = denoiser(x, sigma, cond, num_frames, indicator)
        return d.float()

    return guided_denoiser(run, guider)


def seeded_noise(seed: int, image_shape: tuple, latent_shape: tuple) -> tuple[torch.Tensor, torch.Tensor]:
    """This video's conditioning-image noise, then its initial latent noise, from one seeded stream.

    Same order as the official script after torch.manual_seed(seed), and drawn on the CPU so
    a seed gives the same noise on every device and whatever else is sampled alongside.
    """
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    return torch.randn(image_shape, generator=gen), torch.randn(latent_shape, generator=gen)


def conditioning_image(model, image, opts, device) -> tuple[torch.Tensor | None, list[str]]:
    """The image at the sampling size in [-1, 1] (1, 3, H, W), and what was done to it."""
    from svdcli.families.image import prepare_image, read_image, to_model_range

    if image is None:
        return None, []
    if getattr(model.encode, "mode", "i2v") == "t2v":
        return None, ["this checkpoint is text-conditioned: the image is not used"]
    pixels = read_image(image) if isinstance(image, (str, Path)) else np.asarray(image, np.uint8)
    prepared = prepare_image(pixels, opts.width, opts.height)
    notes = [prepared.note + " (--width/--height choose another size)"] if prepared.note else []
    return to_model_range(prepared.pixels).to(device), notes


def sampling_inputs(family, model, image, opts, device, dtype) -> SamplingInputs:
    """Per-frame (cond, uncond) and the initial latent noise, from this video's seed."""
    from svdcli.models.conditioner import repeat_over_frames

    pixels, notes = conditioning_image(model, image, opts, device)
    z, f = model.vae.cfg.z_channels, model.vae.cfg.downsampling
    image_shape = (1, 3, opts.height, opts.width)
    latent_shape = (opts.frames, z, opts.height // f, opts.width // f)
    image_noise, latent_noise = seeded_noise(opts.seed, image_shape, latent_shape)
    o = opts.family_options
    cond, uncond = model.encode(pixels if pixels is None else pixels.to(dtype),
                                fps_id=o.fps_id, motion_bucket_id=o.motion_bucket_id,
                                cond_aug=o.cond_aug, noise=image_noise.to(device, dtype), prompt=o.prompt,
                                temporal_prompt=o.temporal_prompt)
    if model.multiview:
        from svdcli.families.svd.multiview import SCALARS, append_elevation

        dim = model.unet.cfg.adm_in_channels // SCALARS
        for c in (cond, uncond):  # the unconditional branch keeps the vector, elevation included
            c["vector"] = append_elevation(c["vector"], o.elevation, dim)
    cond = {k: v.float() for k, v in repeat_over_frames(cond, opts.frames).items()}
    uncond = {k: v.float() for k, v in repeat_over_frames(uncond, opts.frames).items()}
    return SamplingInputs(latent_noise.to(device), cond, uncond, fps=float(o.fps_id + 1), notes=notes)


def decode_latents(vae, latents: torch.Tensor, frames: int, chunk: int | None) -> torch.Tensor:
    """Diffusion latents (B*T, 4, h, w) -> (B*T, 3, H, W) in [-1, 1], `chunk` frames per VAE call
    (as sgm's decode_first_stage)."""
    return vae.decode_diffusion_latents(latents, frames, chunk)
