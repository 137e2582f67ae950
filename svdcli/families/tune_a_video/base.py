"""The image model Tune-A-Video inflates: its UNet weights, VAE, text encoder and noise
parametrisation, read from one of two bases.

- our image model: a `svd train --stage image` export (or run dir), text-conditioned (cond.mode
  t2v), EDM-trained with SVD's v-scaling (`edm`); its VAE and text tower are the ones its run
  trained with (tiny seeded ones, or the official files its config names);
- an SD 2.1 single file (`model.diffusion_model.*`, `first_stage_model.*`): v-prediction on SD's
  discrete schedule (`v`; `prediction: eps` for eps bases such as SD 2.1-base), SD's image VAE
  and the OpenCLIP ViT-H-14 text tower (downloaded by open_clip; a clear error without it).
`digest` is the sha256 of the whole base file: a tuned delta applies to that base only.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from svdcli.errors import MissingWeightsError, SvdError

_CACHE: dict[tuple, "Base"] = {}


@dataclass
class Base:
    path: Path
    kind: str                          # ours | sd21
    prediction: str                    # edm | v | eps
    unet_config: object                # svdcli.models.config.UNetConfig
    unet_state: dict = field(repr=False)
    vae: nn.Module = field(repr=False)
    text: nn.Module = field(repr=False)   # list[str] -> (N, L, D)
    digest: str = ""

    @property
    def concat_channels(self) -> int:
        """Zero latent channels the UNet expects after the noisy latent (SVD layout: 4)."""
        return self.unet_config.in_channels - self.unet_config.out_channels


def sd21_unet_config():
    """SD 2.1's UNet (768-v and 512-base alike) as our UNetConfig: what its file's shapes give
    (`infer_unet_config`), the full-size network Tune-A-Video inflates here."""
    from svdcli.models.config import UNetConfig

    return UNetConfig(in_channels=4, adm_in_channels=None)


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            h.update(block)
    return h.hexdigest()


def load_base(path: str | Path, prediction: str = "auto", text: str = "auto", seed: int = 0) -> Base:
    """The base image model at `path` (a run dir means its newest export); cached per file."""
    from svdcli import runs

    path = runs.resolve_checkpoint(Path(path))
    if not path.is_file():
        raise MissingWeightsError(f"base image model not found: {path}; pass a `svd train --stage image` "
                                  "export (or run dir) or an SD 2.1 .safetensors file (e.g. "
                                  "v2-1_768-ema-pruned.safetensors from stabilityai/stable-diffusion-2-1)")
    key = (str(path.resolve()), path.stat().st_mtime_ns, prediction, text, seed)
    if key not in _CACHE:
        _CACHE.clear()
        _CACHE[key] = _read(path, prediction, text, seed)
    return _CACHE[key]


def base_of(own, seed: int, path: str | Path | None = None) -> Base:
    """The base a Tune-A-Video config (`TAVConfig`) names, or the file at `path`, as it reads it."""
    return load_base(path or own.base, own.prediction, own.text, seed)


def _read(path: Path, prediction: str, text: str, seed: int) -> Base:
    from svdcli.families.base import read_header
    from svdcli.families.svd.formats import load_checkpoint

    header = read_header(path)
    ckpt = load_checkpoint(path, header=header)
    if "unet" not in ckpt.parts:
        raise SvdError(f"base {path} holds no UNet weights")
    if ckpt.kind == "sd21":
        vae, text_model = _sd21_parts(ckpt, text, seed)
        kind, default = "sd21", "v"
    elif ckpt.kind == "ours" and "train_config" in header.metadata:
        vae, text_model = _our_parts(path, header.metadata, ckpt.config, text)
        kind, default = "ours", "edm"
    else:
        raise SvdError(f"base {path} is a {ckpt.kind} checkpoint; Tune-A-Video inflates an image model: "
                       "a `svd train --stage image` export or an SD 2.1 file")
    from svdcli.families.tune_a_video.inflate import image_state

    return Base(path, kind, default if prediction == "auto" else prediction, ckpt.config,
                image_state(ckpt.parts["unet"]), vae.eval().requires_grad_(False),
                text_model.eval().requires_grad_(False), file_sha256(path))


def _our_parts(path: Path, meta: dict, unet_cfg, text: str):
    """VAE and text tower of a `svd train --stage image` run, rebuilt from its saved config."""
    from svdcli.families.base import TrainedRun
    from svdcli.families.svd.config import SVDConfig
    from svdcli.families.svd.encoders import svd_encoders, tiny_encoders

    run = TrainedRun.from_values(json.loads(meta["train_config"]), default_family="svd")
    own = SVDConfig.from_dict(run.values)
    if run.family != "svd" or run.stage != "image":
        raise SvdError(f"base {path} comes from the {run.family} {run.stage} stage; Tune-A-Video inflates "
                       "an image model (svd train --stage image)")
    if own.cond.mode != "t2v":
        raise SvdError(f"base {path} was trained with cond.mode {own.cond.mode}: prompts need a "
                       "text-conditioned image model (cond.mode t2v)")
    if own.model == "tiny" or text == "tiny":
        enc = tiny_encoders(unet_cfg, run.seed)
    else:
        enc = svd_encoders(unet_cfg, own.weights, "t2v")
    return enc.vae, enc.embed_text


def _sd21_parts(ckpt, text: str, seed: int):
    from svdcli.families.svd.checkpoint import infer_vae_config
    from svdcli.models.vae import ImageAutoencoder

    if "vae" not in ckpt.parts:
        raise SvdError("the SD 2.1 file holds no first_stage_model (VAE) weights")
    vae = ImageAutoencoder(infer_vae_config(ckpt.parts["vae"]))
    vae.load_state_dict(ckpt.parts["vae"], strict=True)
    return vae, _sd21_text(ckpt.config.context_dim, text, seed)


def _sd21_text(context_dim: int, text: str, seed: int) -> nn.Module:
    """SD 2.1's OpenCLIP ViT-H-14 text tower (penultimate layer), or a seeded tiny one (`text: tiny`)."""
    from svdcli.families.svd.encoders import TinyTextEmbedder, sd_text_tower

    if text == "tiny":
        from open_clip.transformer import TextTransformer

        torch.manual_seed(seed + 1)
        return TinyTextEmbedder(TextTransformer(context_length=16, vocab_size=49408, width=context_dim, heads=2,
                                                layers=1, output_dim=context_dim, output_tokens=True), 16)
    return sd_text_tower()


def scaling(prediction: str):
    """The preconditioning of the base (EDM eq. 7 factors): SVD's v-scaling with EDM c_noise for
    our image model, `VScaling` / `EpsScaling` of SD's scaled-linear schedule for SD bases."""
    from svdcli.diffusion.scalings import for_prediction

    return for_prediction(prediction, None if prediction == "edm" else vp_schedule())


def vp_schedule():
    from svdcli.diffusion.schedules import DiscreteVPSchedule

    return DiscreteVPSchedule.scaled_linear()
