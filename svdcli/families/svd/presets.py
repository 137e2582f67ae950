"""SVD sampling defaults per model (the official scripts' values)."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from svdcli.errors import SvdError
from svdcli.families.base import SamplingDefaults


@dataclass(frozen=True)
class ModelDefaults(SamplingDefaults):
    """SVD's defaults: the common ones, and frames decoded per temporal-VAE call."""

    decode_chunk: int = 14


# scripts/sampling/simple_video_sample.py of the official repository
PRESETS = {
    "svd": ModelDefaults("svd", frames=14, steps=25, min_cfg=1.0, max_cfg=2.5, width=1024, height=576,
                         trained_frames=14),
    "svd_xt": ModelDefaults("svd_xt", frames=25, steps=30, min_cfg=1.5, max_cfg=3.0, width=1024,
                            height=576, trained_frames=25),
}


def guess_official_model(path: Path, metadata: dict | None = None) -> str:
    """'svd_xt' when the name or metadata says xt (svd_xt.safetensors, ...-img2vid-xt), else 'svd'.

    Looks at the file (or folder) name, and in a Hugging Face cache at the repository folder
    (models--stabilityai--stable-video-diffusion-img2vid-xt/snapshots/<hash>/...).
    """
    names = [path.name]
    if "snapshots" in path.parts:
        names.append(path.parts[path.parts.index("snapshots") - 1])
    text = " ".join([*names, *(str(v) for v in (metadata or {}).values())]).lower()
    return "svd_xt" if re.search(r"(^|[^a-z])xt([^a-z]|$)", text) else "svd"


def preset(name: str) -> ModelDefaults:
    if name not in PRESETS:
        raise SvdError(f"unknown --model {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]


def own_defaults(config: dict) -> ModelDefaults:
    """Defaults of one of our checkpoints, from the training config saved inside it (no preset
    name: the user is told "this checkpoint")."""
    frames = int(config.get("num_frames") or config.get("frames") or 14)
    width, height = config.get("width"), config.get("height")
    if (width is None or height is None) and config.get("resolution"):
        height, width = config["resolution"]
    return ModelDefaults("", frames=frames, steps=int(config.get("sample_steps", 25)),
                         min_cfg=float(config.get("min_cfg", 1.0)), max_cfg=float(config.get("max_cfg", 2.5)),
                         width=int(width or 1024), height=int(height or 576),
                         decode_chunk=min(14, frames), trained_frames=frames)
