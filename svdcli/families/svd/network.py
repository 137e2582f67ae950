"""The trained SVD network for a training stage: the EDM denoiser around the video UNet, its
initial weights (`--init`), and which parameters train (image stage: spatial; freeze_spatial:
temporal; LoRA: the LoRA matrices only)."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from svdcli.errors import SvdError
from svdcli.families.svd.config import unet_config
from svdcli.families.svd.inflate import is_temporal


def build_denoiser(cfg, init: str | Path | None = None) -> nn.Module:
    """Denoiser(VideoUNet) with `init` weights loaded and requires_grad set for the stage;
    `cfg` is the training config (svdcli.train.config.TrainConfig)."""
    from svdcli.diffusion.edm import Denoiser
    from svdcli.models.unet import VideoUNet

    torch.manual_seed(cfg.seed)  # same initial weights on every rank
    unet = VideoUNet(unet_config(cfg.family_config.model, cfg.stage))
    unet.gradient_checkpointing = cfg.activation_checkpointing
    if init is not None:
        load_init(unet, init, cfg)
    # the weights the LoRA is trained on, in float32 before any bf16 cast: its file records them
    digest = None
    if cfg.lora.rank and not unet.out[-1].weight.is_meta:   # meta: the planner's weightless build
        from svdcli.models.lora import base_digest

        digest = base_digest(unet.state_dict())
    set_trainable(unet, cfg)
    denoiser = Denoiser(unet)
    denoiser.lora_base_digest = digest
    return denoiser


def set_trainable(unet: nn.Module, cfg) -> None:
    if cfg.lora.rank:
        from svdcli.models.lora import apply_lora

        if not apply_lora(unet, cfg.lora.rank, cfg.lora.alpha):
            raise SvdError("LoRA found no temporal attention layers in this UNet")
        return
    for name, p in unet.named_parameters():
        if cfg.stage == "image":
            p.requires_grad_(not is_temporal(name))   # T=1 image batches never reach them
        elif cfg.family_config.freeze_spatial:
            p.requires_grad_(is_temporal(name))


def read_state(path: Path, cfg) -> dict[str, torch.Tensor]:
    """UNet weights from any checkpoint format (ours, official SVD, diffusers, SD 2.1) or a run dir.

    SD 2.1 image weights are inflated (svdcli.families.svd.inflate): every temporal branch
    starts as the identity, so the video model first reproduces the image model frame by frame.
    """
    from svdcli import runs
    from svdcli.families.svd.formats import load_checkpoint
    from svdcli.families.svd.inflate import inflate_image_unet

    if not path.exists():
        raise SvdError(f"--init checkpoint not found: {path}")
    path = runs.resolve_checkpoint(path)
    ckpt = load_checkpoint(path)
    if "unet" not in ckpt.parts:
        raise SvdError(f"--init {path} holds no UNet weights")
    if ckpt.kind == "sd21":
        return inflate_image_unet(ckpt.parts["unet"], unet_config(cfg.family_config.model), seed=cfg.seed)
    return ckpt.parts["unet"]


def load_init(unet: nn.Module, path: str | Path, cfg) -> None:
    """Load `path` into `unet`. Video stages may start from an image checkpoint: temporal layers
    missing from it keep their fresh initialisation (inflation, as Video LDM / SVD)."""
    state = read_state(Path(path), cfg)
    if cfg.stage == "multiview":
        from svdcli.families.svd.multiview import widen_vector_input

        widen_vector_input(state, unet.cfg.adm_in_channels)  # an image-to-video start: elevation columns at 0
    own = unet.state_dict()
    bad = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    if bad:
        raise SvdError(f"--init {path}: {len(bad)} tensors have other shapes than the "
                       f"{cfg.family_config.model!r} UNet (e.g. {bad[0]}); wrong model size?")
    missing, unexpected = unet.load_state_dict(state, strict=False)
    missing_spatial = [k for k in missing if not is_temporal(k)]
    if missing_spatial or unexpected:
        sample = (missing_spatial or unexpected)[0]
        raise SvdError(f"--init {path} does not fit the UNet: {len(missing_spatial)} spatial tensors "
                       f"missing, {len(unexpected)} unexpected (e.g. {sample})")
    if missing and cfg.stage in ("finetune", "multiview"):
        raise SvdError(f"--init {path} has no temporal layers: finetune from a video checkpoint "
                       "(or run --stage video first)")
