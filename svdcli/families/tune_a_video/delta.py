"""The tuned weights as a small delta file: only the tensors one-shot tuning changed (ST-Attn
and cross-attention W^Q, the temporal attention), with the sha256 of the base file they were
tuned on, so they are never applied to another base."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from svdcli.errors import SvdError
from svdcli.families.tune_a_video.inflate import is_tuned

DELTA_FORMAT = "tune_a_video-delta"


def save_delta(path: Path, unet_state: dict[str, torch.Tensor], base_digest: str, base_path: str,
               metadata: dict[str, str]) -> int:
    """Write the tuned tensors of `unet_state` (UNet names); returns how many."""
    from safetensors.torch import save_file

    delta = {k: v.detach().cpu().contiguous() for k, v in unet_state.items() if is_tuned(k)}
    meta = {**metadata, "format": DELTA_FORMAT, "base_sha256": base_digest, "base_path": base_path}
    save_file(delta, str(path), metadata=meta)
    return len(delta)


def read_delta(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import safe_open

    from svdcli import runs

    path = runs.resolve_checkpoint(Path(path))
    if not path.is_file():
        raise SvdError(f"--tuned {path}: no such file or `svd tune` run folder")
    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata() or {})
        if meta.get("format") != DELTA_FORMAT:
            raise SvdError(f"--tuned {path} is not a Tune-A-Video delta file (written by `svd tune`)")
        return {k: f.get_tensor(k) for k in f.keys()}, meta


def apply_delta(unet: nn.Module, path: Path, base_digest: str) -> dict[str, str]:
    """Load the delta at `path` into the inflated `unet`; refuses a delta tuned on another base."""
    delta, meta = read_delta(path)
    if meta["base_sha256"] != base_digest:
        raise SvdError(f"--tuned {path} was tuned on another base ({meta.get('base_path')}, sha256 "
                       f"{meta['base_sha256'][:12]}...); this base's sha256 is {base_digest[:12]}...")
    own = unet.state_dict()
    bad = [k for k in delta if k not in own or own[k].shape != delta[k].shape]
    if bad:
        raise SvdError(f"--tuned {path}: {len(bad)} tensors do not fit this model (e.g. {bad[0]})")
    with torch.no_grad():
        for k, v in delta.items():
            own[k].copy_(v)
    return meta
