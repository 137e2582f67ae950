"""What an SVD-family checkpoint holds once read, in one naming (sgm module names, no prefix),
and the UNet / VAE configs its tensor shapes imply (official and SD 2.1 files carry none).

Formats are translated at the edge into a `Checkpoint`: `formats.py` reads single files
(official sgm, ours, SD 2.1), `diffusers_folder.py` reads and writes diffusers folders,
`inflate.py` turns SD 2.1 into a video UNet.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from svdcli.errors import SvdError
from svdcli.models.config import UNetConfig

# single-file sgm prefixes; our own files use the part names themselves (`unet.*`, `vae.*`, ...)
OFFICIAL_PREFIXES = {"unet": "model.diffusion_model.", "vae": "first_stage_model.",
                     "conditioner": "conditioner."}


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


def read_json_config(path: Path) -> dict[str, Any]:
    """A component's config.json as a dict; anything else is a user error naming the file."""
    try:
        d = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SvdError(f"{path}: not a readable JSON config ({exc})") from None
    if not isinstance(d, dict):
        raise SvdError(f"{path}: expected a JSON object of settings, found a {type(d).__name__}")
    return d


def parameter_counts(ckpt: Checkpoint) -> dict[str, int]:
    """Parameters per part; the UNet also split into spatial and temporal layers."""
    from svdcli.families.svd.inflate import is_video_only

    counts = {part: sum(v.numel() for v in sd.values()) for part, sd in ckpt.parts.items()}
    if "unet" in ckpt.parts:
        temporal = sum(v.numel() for k, v in ckpt.parts["unet"].items() if is_video_only(k)
                       and not k.startswith("label_emb."))
        counts["unet.temporal"] = temporal
        counts["unet.spatial"] = counts["unet"] - temporal
    return counts


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
