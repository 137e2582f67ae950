"""One clip through the sampler, shared by every Video LDM sampling loop (sampling.py,
long_video.py, upsample.py): the k-diffusion sampler from the prior, then the latent the VAE
decodes."""
from __future__ import annotations

import torch

FPS = 8.0   # the rate a generated video is written at (an input video's own rate where there is one)


def per_frame(cond: dict, t: int) -> dict:
    return {k: v.repeat_interleave(t, dim=0) if v.shape[0] == 1 else v for k, v in cond.items()}


def generate(denoiser, noise, sigmas, cond, uncond, context, sampler: str, callback, image: bool = False):
    """One clip of noise.shape[0] frames, with c_S `context` (or none), as latents the VAE decodes
    (`finish`); `image`: the image model alone, frame by frame."""
    from svdcli.diffusion.samplers import SAMPLERS, prior_sample

    t = noise.shape[0]
    extra = {"cond": per_frame(cond, t), "uncond": per_frame(uncond, t), "context": context}
    if image:
        extra["image"] = True
    x = SAMPLERS[sampler](denoiser, prior_sample(noise.float(), sigmas), sigmas, extra_args=extra, callback=callback)
    return finish(x, sigmas)


def finish(x: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """The sample at the grid's last level as the latent the VAE decodes: x itself at sigma = 0;
    an SD grid ends at alpha_bar_0 (sigma ~0.029), where diffusers returns the VP z = x / sqrt(1 + sigma^2)."""
    from svdcli.diffusion.scalings import to_vp

    return x if float(sigmas[-1]) == 0 else to_vp(x, sigmas[-1])


