"""SVD checkpoint formats, read into a `Checkpoint` (svdcli.families.svd.checkpoint) and written.

Formats read:
- `official`: the single-file sgm checkpoint (SVD / SVD-XT): `model.diffusion_model.*` (UNet),
  `first_stage_model.*` (VAE), `conditioner.*` (image embedder and conditioning VAE);
- `diffusers`: a diffusers folder (`unet/`, `vae/`, each with `config.json` and safetensors),
  read by svdcli.families.svd.diffusers_folder;
- `ours`: one safetensors file with keys `unet.*`, `vae.*`, `conditioner.*` and the configs as
  JSON in the metadata (written by `save_ours`);
- `sd21`: an SD 2.1 image checkpoint (`.safetensors` or `.ckpt`), whose UNet is inflated into
  the video UNet by svdcli.families.svd.inflate.
The header of a file is read once (svdcli.families.base.read_header) and passed along.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from svdcli.errors import MissingWeightsError, SvdError
from svdcli.families.base import CheckpointHeader, read_header
from svdcli.families.svd.checkpoint import (OFFICIAL_PREFIXES, Checkpoint, compare_keys, infer_unet_config,
                                            infer_vae_config)
from svdcli.models.config import UNetConfig

FORMAT_TAG = "svdcli"
FORMAT_VERSION = "1"
WEIGHTS_HINT = ("download the official weights (e.g. svd_xt.safetensors from "
                "https://huggingface.co/stabilityai/stable-video-diffusion-img2vid-xt) "
                "and pass the file's path")


# --- format detection ------------------------------------------------------------------------
def detect_format(path: str | Path, header: CheckpointHeader | None = None) -> str:
    """official | diffusers | ours | sd21, or an SvdError saying why `path` is none of them."""
    path = Path(path)
    if not path.exists():
        raise MissingWeightsError(f"checkpoint not found: {path}; {WEIGHTS_HINT}")
    if path.is_dir():
        if (path / "unet" / "config.json").exists() or (path / "vae" / "config.json").exists():
            return "diffusers"
        raise SvdError(f"{path} is a folder but not a diffusers model folder (no unet/config.json)")
    if path.suffix == ".ckpt":
        return "sd21"
    header = header or read_header(path)
    return _classify(header.keys, header.metadata, path)


def _classify(keys, meta: dict[str, str], path: Path) -> str:
    if meta.get("format") == FORMAT_TAG:
        return "ours"
    unet = [k for k in keys if k.startswith(OFFICIAL_PREFIXES["unet"])]
    if unet:
        return "official" if any(".time_stack." in k for k in unet) else "sd21"
    if any(k.startswith(p) for k in keys for p in OFFICIAL_PREFIXES.values()):
        return "official"
    raise SvdError(f"{path} holds {len(keys)} tensors but none of a known SVD / SD 2.1 layout "
                   "(expected keys like model.diffusion_model.*, or a file written by svd convert)")


# --- loading ---------------------------------------------------------------------------------
def load_checkpoint(path: str | Path, unet_config: UNetConfig | None = None, num_head_channels: int = 64,
                    header: CheckpointHeader | None = None) -> Checkpoint:
    """Read any supported format into a `Checkpoint` (our naming). Tensors stay on CPU.

    `unet_config` overrides the config inferred from tensor shapes (official and SD 2.1 files
    carry none; attention head width is not visible in shapes, hence `num_head_channels`).
    """
    path = Path(path)
    if header is None and path.is_file() and path.suffix != ".ckpt":
        header = read_header(path)
    kind = detect_format(path, header)
    if kind == "diffusers":
        from svdcli.families.svd.diffusers_folder import load_diffusers

        return load_diffusers(path, unet_config)
    sd = _load_flat(path)
    if kind == "ours":
        return _load_ours(path, sd, header.metadata)
    parts, unexpected = split_official(sd)
    ckpt = Checkpoint(kind, parts, None, unexpected=unexpected)
    if "unet" in parts:
        ckpt.config = unet_config or infer_unet_config(parts["unet"], num_head_channels)
        ckpt.notes.append("UNet config given" if unet_config else "UNet config inferred from shapes "
                          f"(num_head_channels={ckpt.config.num_head_channels})")
    if "vae" in parts:
        ckpt.vae_config = infer_vae_config(parts["vae"])
    return ckpt


def _load_flat(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".ckpt":
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - unpickling errors are user-file problems
            raise SvdError(f"{path} is not a readable torch checkpoint ({exc})") from None
        return obj.get("state_dict", obj)
    from safetensors.torch import load_file

    return load_file(str(path))


def split_official(sd: dict[str, torch.Tensor]) -> tuple[dict[str, dict], list[str]]:
    """Split a single-file sgm state dict by prefix; returns (parts, keys no prefix claims)."""
    parts: dict[str, dict] = {}
    unexpected = []
    for key, value in sd.items():
        part = next((p for p, pre in OFFICIAL_PREFIXES.items() if key.startswith(pre)), None)
        if part is None:
            unexpected.append(key)
            continue
        parts.setdefault(part, {})[key[len(OFFICIAL_PREFIXES[part]):]] = value
    return parts, sorted(unexpected)


def _load_ours(path: Path, sd: dict[str, torch.Tensor], meta: dict[str, str]) -> Checkpoint:
    parts: dict[str, dict] = {}
    unexpected = []
    for key, value in sd.items():
        part, _, rest = key.partition(".")
        if part in OFFICIAL_PREFIXES and rest:
            parts.setdefault(part, {})[rest] = value
        else:
            unexpected.append(key)
    cfg = UNetConfig.from_dict(json.loads(meta["unet_config"])) if "unet_config" in meta else None
    vae_cfg = None
    if "vae_config" in meta:
        from svdcli.models.vae import VAEConfig

        vae_cfg = VAEConfig.from_dict(json.loads(meta["vae_config"]))
    ckpt = Checkpoint("ours", parts, cfg, vae_cfg, sorted(unexpected))
    if "conditioner_config" in meta:
        arch = json.loads(meta["conditioner_config"]).get("clip_arch")
        if arch and arch.endswith(".json") and not Path(arch).is_absolute():
            arch = str(path.parent / arch)  # a model-config file kept beside the checkpoint
        ckpt.clip_arch = arch
    return ckpt


def load_unet(source: str | Path | Checkpoint, unet_config: UNetConfig | None = None,
              num_head_channels: int = 64):
    """A VideoUNet with the weights of `source` (any format); SD 2.1 files are inflated."""
    from svdcli.families.svd.inflate import inflate_image_unet
    from svdcli.models.unet import VideoUNet

    ckpt = source if isinstance(source, Checkpoint) else load_checkpoint(source, unet_config, num_head_channels)
    if "unet" not in ckpt.parts:
        raise SvdError(f"this {ckpt.kind} checkpoint holds no UNet weights")
    if ckpt.kind == "sd21":
        cfg = unet_config or UNetConfig.svd()
        state = inflate_image_unet(ckpt.parts["unet"], cfg)
    else:
        cfg, state = unet_config or ckpt.config, ckpt.parts["unet"]
    problems = compare_keys(state, cfg)
    if any(problems.values()):
        detail = "; ".join(f"{len(v)} {k} (e.g. {v[0]})" for k, v in problems.items() if v)
        raise SvdError(f"UNet weights do not fit the config: {detail}")
    unet = VideoUNet(cfg)
    unet.load_state_dict(state, strict=True)
    return unet


# --- writing ---------------------------------------------------------------------------------
def save_ours(path: str | Path, parts: dict[str, dict[str, torch.Tensor]],
              unet_config: UNetConfig | None = None, vae_config: Any = None,
              extra_metadata: dict[str, str] | None = None) -> Path:
    """One safetensors file: `<part>.<key>` tensors, configs as JSON metadata (atomic write)."""
    from safetensors.torch import save_file

    path = Path(path)
    unknown = set(parts) - set(OFFICIAL_PREFIXES)
    if unknown:
        raise ValueError(f"unknown checkpoint parts {sorted(unknown)}")
    flat, seen = {}, set()
    for part, sd in parts.items():
        for k, v in sd.items():
            v = v.detach().contiguous()
            # safetensors refuses shared storage (a diffusers folder's VAE feeds two parts): copy
            flat[f"{part}.{k}"] = v.clone() if v.untyped_storage().data_ptr() in seen else v
            seen.add(v.untyped_storage().data_ptr())
    meta = {"format": FORMAT_TAG, "format_version": FORMAT_VERSION, **(extra_metadata or {})}
    if unet_config is not None:
        meta["unet_config"] = json.dumps(unet_config.to_dict())
    if vae_config is not None:
        meta["vae_config"] = json.dumps(vae_config.to_dict())
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(flat, str(tmp), metadata=meta)
    tmp.replace(path)
    return path
