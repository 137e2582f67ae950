"""Load what SVD sampling needs from any SVD checkpoint: UNet, video VAE, a conditioning
encoder, defaults.

Formats (detected from the header, never from the caller):
- official sgm single file (svd.safetensors / svd_xt.safetensors): UNet, VAE and conditioner;
- our own single file (`save_ours`): the same three parts, configs in the metadata;
- a training run's export (`RUN_DIR/checkpoints/step_*/ema.safetensors`): the UNet, with the
  VAE and encoders the run trained with (rebuilt from its saved training config);
- a diffusers folder (unet/, vae/, image_encoder/).
Models are built on the meta device and take the checkpoint's tensors, so a full-size SVD
loads without a random initialisation of 2 billion parameters.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from torch import nn

from svdcli.errors import MissingWeightsError, SvdError
from svdcli.families.base import CheckpointHeader, LoadedModel, TrainedRun
from svdcli.families.svd.presets import guess_official_model, own_defaults, preset
from svdcli.families.svd.sampling_conditioning import (DiffusersConditioning, OfficialConditioning,
                                                       TrainedConditioning)
from svdcli.models.materialize import materialize

FIRST_EXPORT_FORMAT = "svdcli-unet"  # the first layout of training exports: plain UNet keys


@dataclass(kw_only=True)
class SVDModel(LoadedModel):
    unet: nn.Module
    vae: nn.Module        # VideoAutoencoder
    encode: Callable      # conditioning encoder, see svdcli.families.svd.sampling_conditioning
    source: Path | None = None        # the checkpoint read (a LoRA's base is checked against it)
    base_digest: str | None = None    # its UNet's digest once a LoRA asked (svdcli.families.svd.lora)

    def modules(self) -> list[nn.Module]:
        return [self.unet, self.vae, *self.encode.modules]


def load(family, header: CheckpointHeader) -> SVDModel:
    """Everything `VideoPipeline` needs from the checkpoint `header` describes (weights on the CPU)."""
    path, meta = header.path, header.metadata
    if meta.get("format") == FIRST_EXPORT_FORMAT:
        from safetensors.torch import load_file

        from svdcli.models.config import UNetConfig

        unet_cfg = UNetConfig.from_dict(json.loads(meta["unet_config"]))
        model = _load_trained(family, path, meta, load_file(str(path)), unet_cfg)
    else:
        from svdcli.families.svd.formats import load_checkpoint

        model = assemble(load_checkpoint(path, header=header), path, meta, family)
    model.source = path
    from svdcli.families.svd.multiview import is_multiview

    model.multiview = is_multiview(model.unet.cfg)
    return model


def assemble(ckpt, path: Path, meta: dict, family) -> SVDModel:
    """Build the models of a read `Checkpoint` (official, ours or diffusers) for `family`."""
    if ckpt.kind == "sd21":
        raise SvdError(f"{path} is an SD 2.1 image checkpoint; sample from a video checkpoint "
                       "(official SVD, or one trained with `svd train`)")
    if ckpt.kind == "ours" and "vae" not in ckpt.parts and "train_config" in meta and "unet" in ckpt.parts:
        return _load_trained(family, path, meta, ckpt.parts["unet"], ckpt.config)
    missing = [p for p in ("unet", "vae") if p not in ckpt.parts]
    if missing:
        raise SvdError(f"{path} has no {' and no '.join(missing)} weights; sampling needs a full model")
    try:
        unet = _unet(ckpt.parts["unet"], ckpt.config)
        vae = _vae(ckpt.parts["vae"], ckpt.vae_config)
    except SvdError as exc:
        raise SvdError(f"{path}: {exc}") from None
    if ckpt.kind == "diffusers":
        return _finish_diffusers(family, path, unet, vae, ckpt.notes)
    if "conditioner" not in ckpt.parts:
        raise SvdError(f"{path} has no conditioner weights (CLIP image tower and conditioning VAE)")
    cond = _conditioner(ckpt.parts["conditioner"], meta, path.parent, unet.cfg)
    if ckpt.kind == "ours":
        defaults, kind = own_defaults(json.loads(meta.get("sample_defaults", "{}"))), "own"
    else:
        defaults, kind = preset(guess_official_model(path, meta)), ckpt.kind
    return SVDModel(family=family, defaults=defaults, kind=kind, notes=list(ckpt.notes),
                    unet=unet, vae=vae, encode=OfficialConditioning(cond))


def _unet(state: dict, cfg) -> nn.Module:
    from svdcli.models.unet import VideoUNet

    return materialize(lambda: VideoUNet(cfg), state, "UNet")


def _vae(state: dict, cfg) -> nn.Module:
    from svdcli.families.svd.checkpoint import infer_vae_config
    from svdcli.models.vae import VideoAutoencoder

    cfg = cfg or infer_vae_config(state)
    return materialize(lambda: VideoAutoencoder(cfg), state, "VAE")


def _conditioner(state: dict, meta: dict, folder: Path, unet_cfg) -> nn.Module:
    from svdcli.models.conditioner import Conditioner, ConditionerConfig

    if "conditioner_config" in meta:
        cfg = ConditionerConfig.from_dict(json.loads(meta["conditioner_config"]))
        if cfg.clip_arch.endswith(".json") and not Path(cfg.clip_arch).is_absolute():
            cfg.clip_arch = str(folder / cfg.clip_arch)  # a model-config file kept beside the checkpoint
    else:  # official file: ViT-H-14 tower, the SD VAE, 256-wide scalar embeddings
        cfg = ConditionerConfig.svd()
        if unet_cfg.adm_in_channels:
            cfg.vector_dim = unet_cfg.adm_in_channels // 3
    return materialize(lambda: Conditioner(cfg), state, "conditioner")


def _load_trained(family, path: Path, meta: dict, unet_state: dict, unet_cfg) -> SVDModel:
    """A `svd train` export (UNet only): add the VAE and encoders the run trained with."""
    from svdcli.families.svd.config import SVDConfig
    from svdcli.families.svd.encoders import build_encoders

    run = TrainedRun.from_metadata(meta, default_family="svd")
    own = SVDConfig.from_dict(run.values)
    if run.stage == "image":
        raise SvdError(f"{path} comes from the image stage (single frames); sample from a video-stage checkpoint")
    unet = _unet(unet_state, unet_cfg)
    encoders = build_encoders(own, run.seed)
    defaults = own_defaults({"num_frames": run.frames, "width": run.width, "height": run.height})
    notes = [f"trained {meta.get('step', '?')} steps, {own.model} model, {own.cond.mode} conditioning"
             + (" (multi-view: frames are the views of an orbit)" if run.stage == "multiview" else "")]
    return SVDModel(family=family, defaults=defaults, kind="training export", notes=notes, unet=unet,
                    vae=encoders.vae.eval(), encode=TrainedConditioning(encoders, own.cond.mode))


def _finish_diffusers(family, path: Path, unet, vae, notes: list[str]) -> SVDModel:
    """diffusers folder: CLIP image tower from image_encoder/ (transformers), defaults from unet/config.json."""
    encoder_dir = path / "image_encoder"
    if not (encoder_dir / "config.json").is_file():
        raise MissingWeightsError(f"{path} has no image_encoder/ (the CLIP image tower); download "
                                  "the whole diffusers repository, e.g. stabilityai/stable-video-diffusion-img2vid")
    from transformers import CLIPVisionModelWithProjection

    try:
        image_encoder = CLIPVisionModelWithProjection.from_pretrained(str(encoder_dir)).eval()
    except OSError as exc:
        raise MissingWeightsError(f"cannot load {encoder_dir}: {str(exc)[:300]}") from None
    from svdcli.families.svd.checkpoint import read_json_config

    frames = read_json_config(path / "unet" / "config.json").get("num_frames", 14)
    name = "svd_xt" if frames == 25 else guess_official_model(path)
    notes = [n for n in notes if "image_encoder" not in n]
    return SVDModel(family=family, defaults=preset(name), kind="diffusers", notes=notes, unet=unet, vae=vae,
                    encode=DiffusersConditioning(image_encoder, vae, unet.cfg.adm_in_channels))
