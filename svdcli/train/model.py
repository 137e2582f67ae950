"""The trained network for a stage: the EDM denoiser around the video UNet, its initial weights
(`--init`), and which parameters train (image stage: spatial; freeze_spatial: temporal;
LoRA: the LoRA matrices only)."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from svdcli.errors import SvdError
from svdcli.train.config import TrainConfig

TEMPORAL_PARTS = ("time_stack", "time_mixer", "time_pos_embed")  # sgm names of the temporal layers


def is_temporal(name: str) -> bool:
    """Temporal layers are the ones added to the image UNet (`time_embed` is the sigma embedding)."""
    return any(part in TEMPORAL_PARTS for part in name.split("."))


def unet_config(cfg: TrainConfig):
    from svdcli.models.config import UNetConfig

    return UNetConfig.tiny() if cfg.model == "tiny" else UNetConfig.svd()


def build_denoiser(cfg: TrainConfig, init: str | Path | None = None) -> nn.Module:
    """Denoiser(VideoUNet) with `init` weights loaded and requires_grad set for the stage."""
    from svdcli.diffusion.edm import Denoiser
    from svdcli.models.unet import VideoUNet

    torch.manual_seed(cfg.seed)  # same initial weights on every rank
    unet = VideoUNet(unet_config(cfg))
    unet.gradient_checkpointing = cfg.activation_checkpointing
    if init is not None:
        load_init(unet, init, cfg)
    set_trainable(unet, cfg)
    return Denoiser(unet)


def set_trainable(unet: nn.Module, cfg: TrainConfig) -> None:
    if cfg.lora.rank:
        from svdcli.train.lora import apply_lora

        if not apply_lora(unet, cfg.lora.rank, cfg.lora.alpha):
            raise SvdError("LoRA found no temporal attention layers in this UNet")
        return
    for name, p in unet.named_parameters():
        if cfg.stage == "image":
            p.requires_grad_(not is_temporal(name))   # T=1 image batches never reach them
        elif cfg.freeze_spatial:
            p.requires_grad_(is_temporal(name))


def read_state(path: Path, cfg: TrainConfig) -> dict[str, torch.Tensor]:
    """UNet weights from any checkpoint format (ours, official SVD, diffusers, SD 2.1) or a run dir.

    SD 2.1 image weights are inflated (svdcli.models.checkpoints): every temporal branch starts
    as the identity, so the video model first reproduces the image model frame by frame.
    """
    from svdcli.models.checkpoints import inflate_image_unet, load_checkpoint

    if not path.exists():
        raise SvdError(f"--init checkpoint not found: {path}")
    if path.is_dir() and (path / "checkpoints").is_dir():
        from svdcli.train.checkpoint import latest_ema_file

        path = latest_ema_file(path)
    ckpt = load_checkpoint(path)
    if "unet" not in ckpt.parts:
        raise SvdError(f"--init {path} holds no UNet weights")
    if ckpt.kind == "sd21":
        return inflate_image_unet(ckpt.parts["unet"], unet_config(cfg), seed=cfg.seed)
    return ckpt.parts["unet"]


def load_init(unet: nn.Module, path: str | Path, cfg: TrainConfig) -> None:
    """Load `path` into `unet`. Video stages may start from an image checkpoint: temporal layers
    missing from it keep their fresh initialisation (inflation, as Video LDM / SVD)."""
    state = read_state(Path(path), cfg)
    own = unet.state_dict()
    bad = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    if bad:
        raise SvdError(f"--init {path}: {len(bad)} tensors have other shapes than the "
                       f"{cfg.model!r} UNet (e.g. {bad[0]}); wrong model size?")
    missing, unexpected = unet.load_state_dict(state, strict=False)
    missing_spatial = [k for k in missing if not is_temporal(k)]
    if missing_spatial or unexpected:
        sample = (missing_spatial or unexpected)[0]
        raise SvdError(f"--init {path} does not fit the UNet: {len(missing_spatial)} spatial tensors "
                       f"missing, {len(unexpected)} unexpected (e.g. {sample})")
    if missing and cfg.stage == "finetune":
        raise SvdError(f"--init {path} has no temporal layers: finetune from a video checkpoint "
                       "(or run --stage video first)")


def trainable_summary(model: nn.Module) -> dict:
    """Parameter counts of the full model; ZeRO-3 keeps only a shard on each rank (p.numel() is
    then 0) and records the full size as `ds_numel`."""
    sizes = [(getattr(p, "ds_numel", p.numel()), p.requires_grad) for p in model.parameters()]
    return {"parameters": sum(n for n, _ in sizes), "trainable": sum(n for n, t in sizes if t)}
