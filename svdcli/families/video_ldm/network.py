"""The Video LDM network: SVD's VideoUNet (spatial layers of the image LDM, temporal layers
mixed in by a learned alpha, Blattmann et al. 2023, Sec. 3.1) plus the mask
conditioning of the prediction and interpolation models (Sec. 3.2 and 3.3).

Mask conditioning: the context latents times a binary temporal mask, with the mask as one more
channel, c_S = (m * z, m) (B*T, 4 + 1, h, w), are resized to each temporal layer's resolution,
go through that layer's own learned 3x3 conv (zero-initialised, so a video model starts
unchanged) and are added to the temporal layer's input. c_S rides in the denoiser's `concat`
channels after the UNet's own ones; the UNet never sees it directly.
"""
from __future__ import annotations

import math
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from svdcli.diffusion.edm import Denoiser
from svdcli.errors import SvdError
from svdcli.models.attention import VideoTransformerBlock
from svdcli.models.blocks import VideoResBlock

LATENT_CHANNELS = 4
CONTEXT_CHANNELS = LATENT_CHANNELS + 1   # masked latents + mask


def temporal_layers(unet: nn.Module) -> list[tuple[nn.Module, str, int]]:
    """(module, layout, channels) of every temporal layer, in module order: the 3-D conv
    ResBlocks see (B, C, T, H, W), the temporal transformer blocks (B*T, H*W, C)."""
    layers = []
    for module in unet.modules():
        if isinstance(module, VideoResBlock):
            layers.append((module.time_stack, "video", module.time_stack.in_layers[0].num_channels))
        elif isinstance(module, VideoTransformerBlock):
            layers.append((module, "tokens", module.norm_in.normalized_shape[0]))
    return layers


def _inject(module, args, *, conv: nn.Conv2d, layout: str, context: torch.Tensor):
    """Forward pre-hook: add conv(resize(c_S)) to the temporal layer's input."""
    x = args[0]
    h0, w0 = context.shape[-2:]
    if layout == "video":
        b, c, t, h, w = x.shape
        feat = conv(F.interpolate(context, size=(h, w), mode="area"))          # (B*T, C, h, w)
        feat = feat.reshape(b, t, c, h, w).transpose(1, 2)                      # -> (B, C, T, h, w)
    else:
        bt, s, c = x.shape
        scale = math.sqrt(h0 * w0 / s)                                          # this level's downsampling
        h, w = round(h0 / scale), round(w0 / scale)
        feat = conv(F.interpolate(context, size=(h, w), mode="area"))          # (B*T, C, h, w)
        feat = feat.flatten(2).transpose(1, 2)                                  # -> (B*T, h*w, C)
    return (x + feat.to(x.dtype), *args[1:])


class MaskedContextUNet(nn.Module):
    """forward(x, c_noise, crossattn, vector, T, indicator): x holds the UNet's input channels,
    then (optionally) the 5 channels of c_S. Without them it is exactly the VideoUNet."""

    def __init__(self, unet: nn.Module):
        super().__init__()
        self.unet = unet
        self.context_convs = nn.ModuleList()
        for _, _, channels in temporal_layers(unet):
            conv = nn.Conv2d(CONTEXT_CHANNELS, channels, 3, padding=1)
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)
            self.context_convs.append(conv)

    @property
    def cfg(self):
        return self.unet.cfg

    def forward(self, x, timesteps, context, y, num_video_frames, image_only_indicator=None):
        n_in = self.unet.cfg.in_channels
        if x.shape[1] == n_in:
            return self.unet(x, timesteps, context, y, num_video_frames, image_only_indicator)
        x, c_s = x[:, :n_in], x[:, n_in:]
        # hooks are added per call (not kept), so copies of the module (EMA, DeepSpeed) stay independent
        handles = [layer.register_forward_pre_hook(partial(_inject, conv=conv, layout=layout, context=c_s))
                   for (layer, layout, _), conv in zip(temporal_layers(self.unet), self.context_convs)]
        try:
            return self.unet(x, timesteps, context, y, num_video_frames, image_only_indicator)
        finally:
            for handle in handles:
                handle.remove()


class ContextDenoiser(Denoiser):
    """D(x, sigma, cond) of EDM eq. 7, with the frames the mask marks as given kept: those
    frames are known (context or keyframes), so D returns them and only the masked-out frames
    are generated (and trained: their loss is the only non-zero one)."""

    def forward(self, x, sigma, cond, num_video_frames, image_only_indicator=None, **kw):
        d = super().forward(x, sigma, cond, num_video_frames, image_only_indicator, **kw)
        concat = cond.get("concat")
        if concat is None or concat.shape[1] + x.shape[1] == self.net.cfg.in_channels:
            return d
        mask, known = concat[:, -1:].to(d.dtype), concat[:, -CONTEXT_CHANNELS:-1].to(d.dtype)
        return d * (1.0 - mask) + known * mask


def context_channels(latents: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """c_S = (m * z, m): latents (N, 4, h, w) and a per-frame mask (N,) -> (N, 5, h, w)."""
    m = mask.to(latents.dtype)[:, None, None, None].expand(-1, 1, *latents.shape[-2:])
    return torch.cat([latents * m, m], dim=1)


def build_denoiser(cfg, init: str | Path | None = None) -> ContextDenoiser:
    """The denoiser of a training stage: spatial layers frozen (Sec. 3.1); the mask convs train
    in the predict and interpolate stages only."""
    from svdcli.families.svd.config import unet_config
    from svdcli.families.svd.inflate import is_temporal
    from svdcli.models.unet import VideoUNet

    torch.manual_seed(cfg.seed)
    unet = VideoUNet(unet_config(cfg.family_config.model))
    unet.gradient_checkpointing = cfg.activation_checkpointing
    net = MaskedContextUNet(unet)
    if init is not None:
        load_init(net, Path(init), cfg)
    for name, p in unet.named_parameters():
        p.requires_grad_(is_temporal(name))
    net.context_convs.requires_grad_(cfg.stage in ("predict", "interpolate"))
    return ContextDenoiser(net)


def load_init(net: MaskedContextUNet, path: Path, cfg) -> None:
    """`--init`: a video_ldm export (a video model for the predict / interpolate stages), or any
    image or video UNet the SVD family reads (our --stage image export, SD 2.1, SVD)."""
    from svdcli import runs
    from svdcli.families.base import read_header
    from svdcli.families.svd.network import load_init as load_svd_init

    if not path.exists():
        raise SvdError(f"--init checkpoint not found: {path}")
    path = runs.resolve_checkpoint(path)
    header = read_header(path)
    if header.family != "video_ldm":
        load_svd_init(net.unet, path, cfg)
        return
    from safetensors.torch import load_file

    state = {k[len("net."):]: v for k, v in load_file(str(path)).items() if k.startswith("net.")}
    missing, unexpected = net.load_state_dict(state, strict=False)
    if unexpected or any(not k.startswith("context_convs.") for k in missing):
        raise SvdError(f"--init {path} does not fit the {cfg.family_config.model!r} Video LDM network")
