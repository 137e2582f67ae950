"""The Video LDM network: SVD's VideoUNet (spatial layers of the image LDM, temporal layers
mixed in by a learned alpha, Blattmann et al. 2023, Sec. 3.1) plus the mask
conditioning of the prediction and interpolation models (Sec. 3.2 and 3.3).

Mask conditioning: the context latents times a binary temporal mask, with the mask as one more
channel, c_S = (m * z, m) (B*T, 4 + 1, h, w), are resized to each temporal layer's resolution,
go through that layer's own learned 3x3 conv (zero-initialised, so a video model starts
unchanged) and are added to the temporal layer's input. c_S rides in the denoiser's `concat`
channels after the UNet's own ones; the UNet never sees it directly. The given frames are
conditioning only: the network still denoises every frame, and the loss covers all of them (the
paper's eq. 3); samplers put the known frames back into the result (sampling.py).
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


def context_channels(latents: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """c_S = (m * z, m): latents (N, 4, h, w) and a per-frame mask (N,) -> (N, 5, h, w)."""
    m = mask.to(latents.dtype)[:, None, None, None].expand(-1, 1, *latents.shape[-2:])
    return torch.cat([latents * m, m], dim=1)


def build_denoiser(cfg, init: str | Path | None = None) -> Denoiser:
    """The denoiser of a training stage in the image model's own parameterisation
    (image_base.py): spatial layers frozen (Sec. 3.1); the mask convs train in the predict and
    interpolate stages only. The loss reaches every frame, context frames included (Sec. 3.2,
    eq. 3: c_S is conditioning, not an overwrite)."""
    from svdcli.families.svd.inflate import is_temporal
    from svdcli.families.video_ldm.image_base import network_config, scaling
    from svdcli.models.unet import VideoUNet

    own = cfg.family_config
    torch.manual_seed(cfg.seed)
    unet = VideoUNet(network_config(own))
    unet.gradient_checkpointing = cfg.activation_checkpointing
    net = MaskedContextUNet(unet)
    if init is not None:
        load_init(net, Path(init), cfg)
    for name, p in unet.named_parameters():
        p.requires_grad_(is_temporal(name))
    net.context_convs.requires_grad_(cfg.stage in ("predict", "interpolate"))
    return Denoiser(net, scaling(own))


def load_init(net: MaskedContextUNet, path: Path, cfg) -> None:
    """`--init`: a video_ldm export over the same image model (a video model for the predict /
    interpolate stages), or the image model itself: an SD 2.x file for the SD presets, our
    `svd --stage image` export (or another file the SVD family reads) for ours."""
    from svdcli import runs
    from svdcli.families.base import read_header
    from svdcli.families.svd.formats import detect_format

    if not path.exists():
        raise SvdError(f"--init checkpoint not found: {path}")
    path = runs.resolve_checkpoint(path)
    header = read_header(path)
    if header.family == "video_ldm":
        load_video_ldm(net, path, header, cfg)
        return
    from svdcli.families.video_ldm.image_base import check_init_kind

    kind = detect_format(path, header)
    check_init_kind(cfg.family_config, path, kind)
    if kind != "sd21":
        from svdcli.families.svd.network import load_init as load_svd_init

        load_svd_init(net.unet, path, cfg)
        return
    load_sd(net.unet, path, cfg)


def load_sd(unet: nn.Module, path: Path, cfg) -> None:
    """An SD 2.x file's UNet into the video UNet: spatial layers copied, temporal layers the identity."""
    from svdcli.families.svd.formats import load_checkpoint
    from svdcli.families.svd.inflate import inflate_image_unet

    ckpt = load_checkpoint(path, unet_config=unet.cfg)
    if "unet" not in ckpt.parts:
        raise SvdError(f"--init {path} holds no UNet weights (model.diffusion_model.*)")
    image = ckpt.parts["unet"]
    have, want = image["input_blocks.0.0.weight"].shape[1], unet.cfg.in_channels
    if have != want:
        raise SvdError(f"--init {path}: its UNet takes {have} input channels, model {cfg.family_config.model} "
                       f"{want} (SD 2.x text-to-image: 4, x4 upscaler: 7)")
    unet.load_state_dict(inflate_image_unet(image, unet.cfg, seed=cfg.seed))


def load_video_ldm(net: MaskedContextUNet, path: Path, header, cfg) -> None:
    """A video_ldm export: the same image model and parameterisation, or a clear error."""
    import json

    from safetensors.torch import load_file

    from svdcli.families.video_ldm.config import VideoLDMConfig
    from svdcli.families.video_ldm.image_base import resolved_prediction

    theirs = VideoLDMConfig.from_dict(json.loads(header.metadata.get("train_config", "{}")))
    own = cfg.family_config
    if (theirs.model, resolved_prediction(theirs)) != (own.model, resolved_prediction(own)):
        raise SvdError(f"--init {path} is a Video LDM over model {theirs.model} ({resolved_prediction(theirs)}); "
                       f"this run is model {own.model} ({resolved_prediction(own)}): set the same model and prediction")
    state = {k[len("net."):]: v for k, v in load_file(str(path)).items() if k.startswith("net.")}
    missing, unexpected = net.load_state_dict(state, strict=False)
    if unexpected or any(not k.startswith("context_convs.") for k in missing):
        raise SvdError(f"--init {path} does not fit the {own.model!r} Video LDM network")
