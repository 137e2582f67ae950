"""LoRA (Hu et al. 2021) on the temporal attention of the video UNet, for camera-motion finetunes.

The SVD paper trains rank-16 LoRA on the temporal attention layers to get camera-motion
models (pan, zoom, static) from a video model. Only the LoRA matrices train; the exported
EMA checkpoint has them merged into the base weights so it loads as a plain UNet.

Every q/k/v/out projection of both temporal attentions is wrapped. With SVD's one-token image
context, attn2's q and k have no effect (softmax over one key is 1), so their LoRA matrices get
zero gradient and stay at zero; with a text context (t2v) they train like the others.
"""
from __future__ import annotations

import math

import torch
from torch import nn


class LoRALinear(nn.Module):
    """y = W x + (alpha / r) B A x, with A (r, in) Kaiming-initialised and B (out, r) zero, so
    training starts exactly from the base model."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float):
        super().__init__()
        self.base = base
        self.scale = alpha / rank
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        base.weight.requires_grad_(False)
        if base.bias is not None:
            base.bias.requires_grad_(False)

    # Code that reads a Linear's tensors (e.g. the UNet's single-key attention) sees the base ones.
    @property
    def weight(self) -> torch.Tensor:
        return self.base.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lora = (x.to(self.lora_A.dtype) @ self.lora_A.t()) @ self.lora_B.t()
        return self.base(x) + (self.scale * lora).to(x.dtype)


def is_temporal_attention(name: str) -> bool:
    """Linear layers of the temporal transformer's attentions (sgm: `...time_stack.N.attnK.to_q`)."""
    parts = name.split(".")
    return "time_stack" in parts and any(p.startswith("attn") for p in parts)


def apply_lora(model: nn.Module, rank: int, alpha: float) -> list[str]:
    """Freeze `model`, wrap every temporal-attention Linear in LoRALinear; return wrapped names."""
    for p in model.parameters():
        p.requires_grad_(False)
    targets = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and is_temporal_attention(n)]
    for name in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, LoRALinear(getattr(parent, child), rank, alpha))
    return targets


def merge_lora_state(state: dict[str, torch.Tensor], scale: float) -> dict[str, torch.Tensor]:
    """State dict of a LoRA-wrapped model -> the plain model's: W <- W + scale * B A."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.endswith((".lora_A", ".lora_B")):
            continue
        prefix, sep, leaf = key.rpartition(".base.")
        if not sep:                     # not inside a LoRA wrapper: kept as it is
            out[key] = value
            continue
        plain = f"{prefix}.{leaf}"
        if leaf == "weight" and f"{prefix}.lora_A" in state:
            a, b = state[f"{prefix}.lora_A"].float(), state[f"{prefix}.lora_B"].float()
            value = value.float() + scale * (b @ a)
        out[plain] = value
    return out


def lora_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Only the LoRA matrices of a state dict (what a camera-motion finetune adds)."""
    return {k: v for k, v in state.items() if k.endswith((".lora_A", ".lora_B"))}
