"""Checkpoint formats, translated at the edge into one naming (sgm module names, no prefix).

Formats read:
- `official`: the single-file sgm checkpoint (SVD / SVD-XT): `model.diffusion_model.*` (UNet),
  `first_stage_model.*` (VAE), `conditioner.*` (image embedder and conditioning VAE);
- `diffusers`: a diffusers folder (`unet/`, `vae/`, each with `config.json` and safetensors);
- `ours`: one safetensors file with keys `unet.*`, `vae.*`, `conditioner.*` and the configs as
  JSON in the metadata (written by `save_ours`);
- `sd21`: an SD 2.1 image checkpoint (`.safetensors` or `.ckpt`), whose UNet is inflated into
  the video UNet by `inflate_image_unet`.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from svdcli.errors import MissingWeightsError, SvdError
from svdcli.models.config import UNetConfig

OFFICIAL_PREFIXES = {"unet": "model.diffusion_model.", "vae": "first_stage_model.",
                     "conditioner": "conditioner."}
FORMAT_TAG = "svdcli"
FORMAT_VERSION = "1"
WEIGHTS_HINT = ("download the official weights (e.g. svd_xt.safetensors from "
                "https://huggingface.co/stabilityai/stable-video-diffusion-img2vid-xt) "
                "and pass the file's path")


@dataclass
class Checkpoint:
    """What a checkpoint holds, in our naming: state dicts per part and the UNet config."""

    kind: str                                    # official | diffusers | ours | sd21
    parts: dict[str, dict[str, torch.Tensor]]    # unet / vae / conditioner -> state dict
    config: UNetConfig | None                    # the UNet's config (None without a UNet)
    vae_config: Any = None                       # svdcli.models.vae.VAEConfig when a VAE is present
    unexpected: list[str] = field(default_factory=list)   # source keys no part claims
    notes: list[str] = field(default_factory=list)        # what was inferred or skipped
    clip_arch: str | None = None     # open_clip arch of the conditioner's image tower (None: ViT-H-14)
    clip_vision: dict | None = None  # its transformers CLIPVisionConfig, when read from a diffusers folder

    def __iter__(self):
        """Unpacks as (kind, parts, config)."""
        return iter((self.kind, self.parts, self.config))


# --- format detection ------------------------------------------------------------------------
def _read_keys(path: Path) -> tuple[list[str], dict[str, str]]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return list(f.keys()), f.metadata() or {}
    except Exception as exc:  # noqa: BLE001 - any parse failure means "not a safetensors file"
        raise SvdError(f"{path} is not a readable safetensors checkpoint ({exc})") from None


def detect_format(path: str | Path) -> str:
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
    keys, meta = _read_keys(path)
    return _classify(keys, meta, path)


def _classify(keys: list[str], meta: dict[str, str], path: Path) -> str:
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
def load_checkpoint(path: str | Path, unet_config: UNetConfig | None = None,
                    num_head_channels: int = 64) -> Checkpoint:
    """Read any supported format into a `Checkpoint` (our naming). Tensors stay on CPU.

    `unet_config` overrides the config inferred from tensor shapes (official and SD 2.1 files
    carry none; attention head width is not visible in shapes, hence `num_head_channels`).
    """
    path = Path(path)
    kind = detect_format(path)
    if kind == "diffusers":
        return _load_diffusers(path, unet_config)
    sd = _load_flat(path)
    if kind == "ours":
        return _load_ours(path, sd)
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


def _load_ours(path: Path, sd: dict[str, torch.Tensor]) -> Checkpoint:
    _, meta = _read_keys(path)
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


def read_json_config(path: Path) -> dict[str, Any]:
    """A component's config.json as a dict; anything else is a user error naming the file."""
    try:
        d = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SvdError(f"{path}: not a readable JSON config ({exc})") from None
    if not isinstance(d, dict):
        raise SvdError(f"{path}: expected a JSON object of settings, found a {type(d).__name__}")
    return d


def _diffusers_unet_config(path: Path) -> UNetConfig:
    from svdcli.models.unet_diffusers import unet_config_from_diffusers

    try:
        return unet_config_from_diffusers(read_json_config(path))
    except (ValueError, TypeError, KeyError, ZeroDivisionError) as exc:  # values of the wrong kind
        raise SvdError(f"{path}: not a UNetSpatioTemporalConditionModel config we can build "
                       f"({type(exc).__name__}: {exc})") from None


def _load_diffusers(path: Path, unet_config: UNetConfig | None) -> Checkpoint:
    from safetensors.torch import load_file

    from svdcli.models.unet_diffusers import unet_state_from_diffusers

    ckpt = Checkpoint("diffusers", {}, None)
    if (path / "unet" / "config.json").exists():
        cfg = unet_config or _diffusers_unet_config(path / "unet" / "config.json")
        state, extra = unet_state_from_diffusers(load_file(str(_weights_file(path / "unet"))), cfg)
        ckpt.parts["unet"], ckpt.config = state, cfg
        ckpt.unexpected += [f"unet/{k}" for k in extra]
    vae_diffusers = None
    if (path / "vae" / "config.json").exists():
        from svdcli.models.vae import vae_state_from_diffusers

        vae_diffusers = load_file(str(_weights_file(path / "vae")))
        ckpt.parts["vae"] = vae_state_from_diffusers(vae_diffusers)
        ckpt.vae_config = infer_vae_config(ckpt.parts["vae"])
    encoder = _weights_file(path / "image_encoder", required=False)
    if encoder is not None and vae_diffusers is not None:
        from svdcli.models.conditioner_diffusers import conditioner_state_from_diffusers

        ckpt.parts["conditioner"] = conditioner_state_from_diffusers(load_file(str(encoder)), vae_diffusers)
        ckpt.clip_vision = read_json_config(path / "image_encoder" / "config.json")
        ckpt.notes.append("conditioner from image_encoder/ + vae/ (CLIP text leftovers and the "
                          "conditioning VAE's decoder are not in diffusers folders)")
    return ckpt


def _weights_file(folder: Path, required: bool = True) -> Path | None:
    for stem in ("diffusion_pytorch_model", "model"):     # diffusers / transformers components
        for name in (f"{stem}.safetensors", f"{stem}.fp16.safetensors"):
            if (folder / name).exists():
                return folder / name
    if not required:
        return None
    raise MissingWeightsError(f"{folder} has a config.json but no diffusion_pytorch_model"
                              "[.fp16].safetensors; download the weights into that folder")


# --- configs from tensor shapes --------------------------------------------------------------
def _indices(sd: dict, prefix: str) -> list[int]:
    """Sorted distinct integers n of keys `prefix.n.*`."""
    out = {int(k[len(prefix):].split(".")[0]) for k in sd if k.startswith(prefix)
           and k[len(prefix):].split(".")[0].isdigit()}
    return sorted(out)


def infer_unet_config(sd: dict[str, torch.Tensor], num_head_channels: int = 64) -> UNetConfig:
    """UNetConfig from a (video or SD 2.1) UNet state dict; head width cannot be seen in shapes."""
    try:
        conv_in = sd["input_blocks.0.0.weight"]
        mc = conv_in.shape[0]
        ops = [i for i in _indices(sd, "input_blocks.") if f"input_blocks.{i}.0.op.weight" in sd]
        nrb = ops[0] - 1 if ops else max(_indices(sd, "input_blocks."))   # one level: blocks 1..n
        levels = len(ops) + 1
        first = [1 + lv * (nrb + 1) for lv in range(levels)]
        mult = tuple(sd[f"input_blocks.{k}.0.out_layers.3.weight"].shape[0] // mc for k in first)
        attn = tuple(2**lv for lv, k in enumerate(first) if f"input_blocks.{k}.1.norm.weight" in sd)
        t0 = f"input_blocks.{first[0]}.1." if attn else "middle_block.1."
        ctx = next(v.shape[1] for k, v in sd.items() if k.endswith("attn2.to_k.weight"))
        kernel = sd.get(f"input_blocks.{first[0]}.0.time_stack.in_layers.2.weight")
        # a head width that does not divide every level cannot be right: fall back to the gcd
        num_head_channels = math.gcd(num_head_channels, *(mc * m for m in mult))
        return UNetConfig(
            in_channels=conv_in.shape[1], out_channels=sd["out.2.weight"].shape[0], model_channels=mc,
            channel_mult=mult, num_res_blocks=nrb, attention_resolutions=attn,
            num_head_channels=num_head_channels,
            transformer_depth=len(_indices(sd, t0 + "transformer_blocks.")),
            context_dim=ctx,
            adm_in_channels=sd["label_emb.0.0.weight"].shape[1] if "label_emb.0.0.weight" in sd else None,
            use_linear_in_transformer=sd[t0 + "proj_in.weight"].ndim == 2,
            video_kernel_size=tuple(kernel.shape[2:]) if kernel is not None else (3, 1, 1))
    except (KeyError, StopIteration, IndexError, ValueError) as exc:
        raise SvdError(f"cannot work out the UNet's shape from its weights ({exc}); "
                       "is this a UNet checkpoint?") from None


def infer_vae_config(sd: dict[str, torch.Tensor]):
    """VAEConfig from an autoencoder state dict (our naming)."""
    from svdcli.models.vae import VAEConfig

    try:
        ch = sd["encoder.conv_in.weight"].shape[0]
        levels = _indices(sd, "encoder.down.")
        mult = tuple(sd[f"encoder.down.{lv}.block.0.conv1.weight"].shape[0] // ch for lv in levels)
        return VAEConfig(ch=ch, ch_mult=mult, num_res_blocks=len(_indices(sd, "encoder.down.0.block.")),
                         in_channels=sd["encoder.conv_in.weight"].shape[1],
                         z_channels=sd["decoder.conv_in.weight"].shape[1])
    except KeyError as exc:
        raise SvdError(f"cannot work out the VAE's shape from its weights (no {exc})") from None


# --- checking and building -------------------------------------------------------------------
def compare_keys(state: dict[str, torch.Tensor], cfg: UNetConfig) -> dict[str, list[str]]:
    """missing / unexpected / mismatched keys of `state` against VideoUNet(cfg)."""
    from svdcli.models.unet import VideoUNet

    with torch.device("meta"):
        own = VideoUNet(cfg).state_dict()
    return {
        "missing": sorted(set(own) - set(state)),
        "unexpected": sorted(set(state) - set(own)),
        "mismatched": sorted(f"{k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
                             for k in set(own) & set(state) if state[k].shape != own[k].shape),
    }


def load_unet(source: str | Path | Checkpoint, unet_config: UNetConfig | None = None,
              num_head_channels: int = 64):
    """A VideoUNet with the weights of `source` (any format); SD 2.1 files are inflated."""
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


_BRANCH_ENDS = ("time_stack.out_layers.3.", "ff_in.net.2.", "attn1.to_out.0.", "attn2.to_out.0.",
                "ff.net.2.")


def _temporal_output_layers(name: str) -> bool:
    """The last layer of each temporal branch: zeroed, the branch is the identity at start."""
    if "time_pos_embed.2." in name:           # frame-position embedding starts at 0
        return True
    return ".time_stack." in f".{name}" and any(end in name for end in _BRANCH_ENDS)


def inflate_image_unet(image_state: dict[str, torch.Tensor], cfg: UNetConfig,
                       seed: int = 0) -> dict[str, torch.Tensor]:
    """SD 2.1 UNet weights -> a video UNet state whose output equals the image model per frame.

    Spatial layers take the image weights (extra input channels zero, so the conditioning
    latent starts ignored); every temporal branch ends in a zeroed layer, so it starts as the
    identity and alpha-blending an identity with the spatial path changes nothing; label_emb
    (absent in SD 2.1) ends zeroed, so the micro-conditioning starts silent. Gradients still
    reach all of them through the zeroed layers' inputs.
    """
    from svdcli.models.unet import VideoUNet

    torch.manual_seed(seed)
    fresh = VideoUNet(cfg).state_dict()
    state = {}
    for name, value in fresh.items():
        if name in image_state and ".time_stack." not in f".{name}" and "time_mixer" not in name:
            src = image_state[name]
            if name == "input_blocks.0.0.weight" and src.shape[1] < value.shape[1]:
                padded = torch.zeros_like(value)
                padded[:, : src.shape[1]] = src          # (C, 4, 3, 3) -> (C, 8, 3, 3)
                src = padded
            if src.shape != value.shape:
                raise SvdError(f"image checkpoint tensor {name} has shape {tuple(src.shape)}, "
                               f"the video UNet needs {tuple(value.shape)}")
            state[name] = src.to(value.dtype)
        elif _temporal_output_layers(name) or name.startswith("label_emb.0.2."):
            state[name] = torch.zeros_like(value)
        else:
            state[name] = value
    missing = [k for k in fresh if not _is_video_only(k) and k not in image_state]
    if missing:
        raise SvdError(f"image checkpoint lacks {len(missing)} spatial UNet tensors (e.g. {missing[0]})")
    return state


def _is_video_only(name: str) -> bool:
    return (".time_stack." in f".{name}" or "time_mixer" in name or "time_pos_embed" in name
            or name.startswith("label_emb."))


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


def save_diffusers(folder: str | Path, ckpt: Checkpoint) -> tuple[list[str], list[str]]:
    """Write a diffusers SVD folder (svdcli.models.diffusers_folder); returns (parts, notes)."""
    from svdcli.models.diffusers_folder import save_diffusers as write

    return write(folder, ckpt)


def parameter_counts(ckpt: Checkpoint) -> dict[str, int]:
    """Parameters per part; the UNet also split into spatial and temporal layers."""
    counts = {part: sum(v.numel() for v in sd.values()) for part, sd in ckpt.parts.items()}
    if "unet" in ckpt.parts:
        temporal = sum(v.numel() for k, v in ckpt.parts["unet"].items() if _is_video_only(k)
                       and not k.startswith("label_emb."))
        counts["unet.temporal"] = temporal
        counts["unet.spatial"] = counts["unet"] - temporal
    return counts
