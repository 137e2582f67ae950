"""What an SVD-family checkpoint holds once read, in one naming (sgm module names, no prefix).

Formats are translated at the edge into a `Checkpoint`: `formats.py` reads single files
(official sgm, ours, SD 2.1), `diffusers_folder.py` reads and writes diffusers folders,
`shapes.py` works out configs from tensor shapes, `inflate.py` turns SD 2.1 into a video UNet.
"""
from __future__ import annotations

import json
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
