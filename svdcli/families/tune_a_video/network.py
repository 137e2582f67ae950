"""The Tune-A-Video denoiser: the base image UNet inflated (inflate.py), wrapped in the base's
preconditioning (EDM eq. 7), and the conditioning dict it reads."""
from __future__ import annotations

import torch
from torch import nn

from svdcli.errors import SvdError
from svdcli.families.tune_a_video.base import Base, scaling
from svdcli.families.tune_a_video.inflate import inflate_unet, set_trainable

# the micro-conditioning our image model was trained with when it has a `vector` input (SVD layout)
DEFAULT_VECTOR = {"fps_id": 6, "motion_bucket_id": 127, "cond_aug": 0.0}


def inflated_unet(base: Base, attention: str = "sparse_causal", seed: int = 0) -> nn.Module:
    """VideoUNet(base config) with the base's image weights, inflated; temporal attention fresh (zero out)."""
    from svdcli.families.svd.inflate import is_temporal
    from svdcli.models.unet import VideoUNet

    torch.manual_seed(seed)
    unet = VideoUNet(base.unet_config)
    missing, unexpected = unet.load_state_dict(base.unet_state, strict=False)
    missing = [k for k in missing if not is_temporal(k)]
    if missing or unexpected:
        raise SvdError(f"base {base.path} does not fit its UNet: {len(missing)} image tensors missing, "
                       f"{len(unexpected)} unexpected (e.g. {(missing or unexpected)[0]})")
    return inflate_unet(unet, attention)


def build_denoiser(base: Base, attention: str, seed: int, train: bool = True) -> nn.Module:
    """D(x, sigma, cond, T) around the inflated UNet; with `train` only the tuned parts need grad."""
    from svdcli.diffusion.edm import Denoiser

    unet = inflated_unet(base, attention, seed)
    if train:
        set_trainable(unet)
    return Denoiser(unet, scaling(base.prediction))


def make_cond(context: torch.Tensor, frames: int, base: Base, latent_shape) -> dict[str, torch.Tensor]:
    """Text context (B, L, D) -> the denoiser's cond for B videos of `frames` frames (video-major)."""
    from svdcli.models.conditioner import vector_embedding

    b = context.shape[0]
    cond = {"crossattn": context.repeat_interleave(frames, dim=0)}          # (B*T, L, D)
    adm = base.unet_config.adm_in_channels
    if adm:
        v = DEFAULT_VECTOR
        vec = vector_embedding(v["fps_id"], v["motion_bucket_id"], v["cond_aug"], dim=adm // 3)
        cond["vector"] = vec.to(context.device).expand(b * frames, -1)
    if base.concat_channels:
        h, w = latent_shape
        cond["concat"] = context.new_zeros(b * frames, base.concat_channels, h, w)
    return cond
