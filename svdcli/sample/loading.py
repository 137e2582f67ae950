"""Load what sampling needs from any checkpoint: UNet, video VAE, a conditioning encoder, defaults.

Formats (detected from the file, never from the caller):
- official sgm single file (svd.safetensors / svd_xt.safetensors): UNet, VAE and conditioner;
- our own single file (`save_ours`): the same three parts, configs in the metadata;
- a training run's EMA export (`RUN_DIR/checkpoints/step_*/ema.safetensors`, or `RUN_DIR`):
  the UNet, with the VAE and encoders the run trained with (rebuilt from its train_config);
- a diffusers folder (unet/, vae/, image_encoder/).
Models are built on the meta device and take the checkpoint's tensors, so a full-size SVD
loads without a random initialisation of 2 billion parameters.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from svdcli.errors import MissingWeightsError, SvdError
from svdcli.sample.conditioning import (DiffusersConditioning, OfficialConditioning,
                                        TrainedConditioning)
from svdcli.sample.presets import ModelDefaults, guess_official_model, own_defaults, preset


@dataclass
class LoadedModel:
    unet: nn.Module
    vae: nn.Module  # VideoAutoencoder
    encode: Callable  # conditioning encoder, see svdcli.sample.conditioning
    defaults: ModelDefaults
    kind: str
    notes: list[str] = field(default_factory=list)


def materialize(factory: Callable[[], nn.Module], state: dict[str, torch.Tensor], what: str) -> nn.Module:
    """Build `factory()` on the meta device and take `state`'s tensors (strict)."""
    with torch.device("meta"):
        module = factory()
    problems = _misfit(module.state_dict(), state)
    if problems:
        raise SvdError(f"the checkpoint's {what} weights do not fit the model: {problems}")
    try:
        module.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        raise SvdError(f"the checkpoint's {what} weights do not fit the model: {str(exc)[:400]}") from None
    for name, buf in list(module.named_buffers()):
        if buf.is_meta:  # a non-persistent buffer: not in any checkpoint, rebuild it
            owner_name, _, attr = name.rpartition(".")
            owner = module.get_submodule(owner_name)
            if attr != "attn_mask":
                raise SvdError(f"cannot rebuild the {what}'s buffer {name} after loading")
            # open_clip's causal text mask (unused by the image tower, kept for completeness)
            n = buf.shape[-1]
            owner.register_buffer(attr, torch.full((n, n), float("-inf")).triu_(1), persistent=False)
    return module.eval().requires_grad_(False)


def _misfit(own: dict[str, torch.Tensor], state: dict[str, torch.Tensor]) -> str:
    """One line on the tensors of `state` that `own` (a model's state dict) cannot take; "" if none."""
    shapes = [k for k in state if k in own and own[k].shape != state[k].shape]
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    out = []
    if shapes:
        k = shapes[0]
        out.append(f"{len(shapes)} tensors of another shape (e.g. {k}: {tuple(state[k].shape)} in the "
                   f"checkpoint, {tuple(own[k].shape)} in the model its config describes)")
    out += [f"{len(keys)} {kind} (e.g. {keys[0]})" for kind, keys in
            (("missing", missing), ("unexpected", unexpected)) if keys]
    return "; ".join(out)


def _metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return f.metadata() or {}
    except Exception as exc:  # noqa: BLE001 - any parse failure is a bad user file
        raise SvdError(f"{path} is not a readable safetensors checkpoint ({str(exc)[:200]})") from None


def resolve_checkpoint(path: str | Path) -> Path:
    """A training run folder means its newest EMA export; anything else is taken as given."""
    path = Path(path).expanduser()
    if not path.exists():
        raise MissingWeightsError(
            f"checkpoint not found: {path}. Official weights: svd.safetensors from "
            "https://huggingface.co/stabilityai/stable-video-diffusion-img2vid (svd_xt.safetensors "
            "from ...-img2vid-xt); or `make demo` trains a small checkpoint to try.")
    if path.is_dir() and (path / "checkpoints").is_dir():
        from svdcli.train.checkpoint import latest_ema_file

        return latest_ema_file(path)
    return path


def load_model(path: str | Path, model: str | None = None) -> LoadedModel:
    """Everything `VideoPipeline` needs from the checkpoint at `path` (weights stay on the CPU)."""
    path = resolve_checkpoint(path)
    if path.is_file() and path.suffix == ".safetensors":
        meta = _metadata(path)
        if meta.get("format") == "svdcli-unet":  # the first layout of training exports
            from safetensors.torch import load_file

            from svdcli.models.config import UNetConfig

            unet_cfg = UNetConfig.from_dict(json.loads(meta["unet_config"]))
            return _load_trained(path, meta, model, load_file(str(path)), unet_cfg)
    from svdcli.models.checkpoints import load_checkpoint

    ckpt = load_checkpoint(path)
    meta = _metadata(path) if path.is_file() and path.suffix == ".safetensors" else {}
    return assemble(ckpt, path, meta, model)


def assemble(ckpt, path: Path, meta: dict, model: str | None = None) -> LoadedModel:
    """Build the models of a read `Checkpoint` (official, ours or diffusers)."""
    if ckpt.kind == "sd21":
        raise SvdError(f"{path} is an SD 2.1 image checkpoint; sample from a video checkpoint "
                       "(official SVD, or one trained with `svd train`)")
    if ckpt.kind == "ours" and "vae" not in ckpt.parts and "train_config" in meta and "unet" in ckpt.parts:
        return _load_trained(path, meta, model, ckpt.parts["unet"], ckpt.config)
    missing = [p for p in ("unet", "vae") if p not in ckpt.parts]
    if missing:
        raise SvdError(f"{path} has no {' and no '.join(missing)} weights; sampling needs a full model")
    try:
        unet = _unet(ckpt.parts["unet"], ckpt.config)
        vae = _vae(ckpt.parts["vae"], ckpt.vae_config)
    except SvdError as exc:
        raise SvdError(f"{path}: {exc}") from None
    if ckpt.kind == "diffusers":
        return _finish_diffusers(path, unet, vae, model, ckpt.notes)
    if "conditioner" not in ckpt.parts:
        raise SvdError(f"{path} has no conditioner weights (CLIP image tower and conditioning VAE)")
    cond = _conditioner(ckpt.parts["conditioner"], meta, path.parent, unet.cfg)
    if ckpt.kind == "ours":
        defaults = own_defaults(json.loads(meta.get("sample_defaults", "{}")))
        if model:
            defaults = preset(model)
    else:
        defaults = preset(model or guess_official_model(path, meta))
    return LoadedModel(unet, vae, OfficialConditioning(cond), defaults, ckpt.kind, list(ckpt.notes))


def _unet(state: dict, cfg) -> nn.Module:
    from svdcli.models.unet import VideoUNet

    return materialize(lambda: VideoUNet(cfg), state, "UNet")


def _vae(state: dict, cfg) -> nn.Module:
    from svdcli.models.checkpoints import infer_vae_config
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


def _load_trained(path: Path, meta: dict, model: str | None, unet_state: dict, unet_cfg) -> LoadedModel:
    """A `svd train` export (UNet only): add the VAE and encoders the run trained with."""
    from svdcli.train.config import config_from_dict
    from svdcli.train.encoders import build_encoders

    cfg = config_from_dict(json.loads(meta["train_config"]))
    if cfg.stage == "image":
        raise SvdError(f"{path} comes from the image stage (single frames); sample from a video-stage checkpoint")
    unet = _unet(unet_state, unet_cfg)
    encoders = build_encoders(cfg, unet_cfg)
    defaults = own_defaults({"num_frames": cfg.frames, "width": cfg.data.width, "height": cfg.data.height})
    notes = [f"trained {meta.get('step', '?')} steps, {cfg.model} model, {cfg.cond.mode} conditioning"]
    return LoadedModel(unet, encoders.vae.eval(), TrainedConditioning(encoders, cfg.cond.mode),
                       preset(model) if model else defaults, "trained", notes)


def _finish_diffusers(path: Path, unet, vae, model: str | None, notes: list[str]) -> LoadedModel:
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
    from svdcli.models.checkpoints import read_json_config

    frames = read_json_config(path / "unet" / "config.json").get("num_frames", 14)
    name = model or ("svd_xt" if frames == 25 else guess_official_model(path))
    notes = [n for n in notes if "image_encoder" not in n]
    return LoadedModel(unet, vae, DiffusersConditioning(image_encoder, vae, unet.cfg.adm_in_channels),
                       preset(name), "diffusers", notes)
