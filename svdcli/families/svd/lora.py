"""Trained LoRA files on an SVD checkpoint: `svd sample --lora` (applied at sampling time) and
`svd convert --merge-lora` (folded into the weights). Either way a LoRA is refused unless the
checkpoint's UNet is the base it was trained on (svdcli.models.lora.base_digest)."""
from __future__ import annotations

from pathlib import Path

import torch

from svdcli.errors import SvdError


def stored_unet(path: Path) -> dict[str, torch.Tensor]:
    """The UNet tensors as the checkpoint at `path` stores them (any of our formats)."""
    from svdcli.families.base import read_header
    from svdcli.families.svd.formats import load_checkpoint
    from svdcli.families.svd.loading import FIRST_EXPORT_FORMAT

    path = Path(path)
    header = read_header(path) if path.is_file() else None
    if header is not None and header.metadata.get("format") == FIRST_EXPORT_FORMAT:
        from safetensors.torch import load_file

        return load_file(str(path))
    ckpt = load_checkpoint(path, header=header)
    if "unet" not in ckpt.parts:
        raise SvdError(f"{path} holds no UNet weights for a LoRA")
    return ckpt.parts["unet"]


def model_digest(model) -> str:
    """The base digest of a loaded SVDModel, from its checkpoint's stored tensors (the loaded
    UNet may already be in fp16 on a GPU); computed once per model."""
    from svdcli.models.lora import base_digest

    if model.base_digest is None:
        if model.source is None:
            raise SvdError("this model was not loaded from a checkpoint file: no base to check a LoRA against")
        model.base_digest = base_digest(stored_unet(model.source))
    return model.base_digest


def checked_loras(pairs, digest: str, what: str, layers: set[str]):
    """[(path, scale), ...] -> [(LoRAFile, scale), ...], each checked against the base model."""
    from svdcli.models.lora_file import check_loras, read_loras

    loras = read_loras(pairs)
    check_loras(loras, digest, what, layers)
    return loras


def resolve_loras(model, pairs) -> list[tuple[str, float]]:
    """Check sampling's --lora files against the model; returns them as (path, scale)."""
    if not pairs:
        return []
    layers = {n for n, m in model.unet.named_modules() if isinstance(m, torch.nn.Linear)}
    checked_loras(pairs, model_digest(model), f"the checkpoint {model.source}", layers)
    return [(str(p), float(s)) for p, s in pairs]


def set_loras(model, pairs) -> None:
    """Apply exactly the (path, scale) LoRAs to the model's UNet (replacing any applied before)."""
    from svdcli.models.lora import apply_loras
    from svdcli.models.lora_file import read_loras

    apply_loras(model.unet, read_loras(pairs))


def merge_into(unet: dict[str, torch.Tensor], pairs, what: str) -> tuple[dict[str, torch.Tensor], list]:
    """`svd convert --merge-lora`: the UNet state with the LoRAs folded in, and the LoRAs read."""
    from svdcli.models.lora import base_digest, merge_loras

    loras = checked_loras(pairs, base_digest(unet), what, {k[: -len(".weight")] for k in unet if k.endswith(".weight")})
    return merge_loras(unet, loras), loras
