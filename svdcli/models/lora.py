"""LoRA (Hu et al. 2021) on the temporal attention of the video UNet, for camera-motion finetunes.

The SVD paper trains rank-16 LoRA on the temporal attention layers to get camera-motion
models (pan, zoom, static) from a video model. Only the LoRA matrices train; the exported
EMA checkpoint has them merged into the base weights so it loads as a plain UNet, and the
LoRA matrices alone go to a small file (svdcli.models.lora_file) that sampling applies to the
base model at any scale (`apply_loras`) or `svd convert --merge-lora` folds in (`merge_loras`).

Every q/k/v/out projection of both temporal attentions is wrapped. With SVD's one-token image
context, attn2's q and k have no effect (softmax over one key is 1), so their LoRA matrices get
zero gradient and stay at zero; with a text context (t2v) they train like the others.
"""
from __future__ import annotations

import math

import torch
from torch import nn


class _WrappedLinear(nn.Module):
    """A module in place of the Linear `self.base`. Code that reads a Linear's tensors (e.g. the
    UNet's single-key attention) sees the base ones."""

    base: nn.Linear

    @property
    def weight(self) -> torch.Tensor:
        return self.base.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base.bias


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    """Put `module` where the submodule called `name` is."""
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


class LoRALinear(_WrappedLinear):
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
        _replace(model, name, LoRALinear(model.get_submodule(name), rank, alpha))
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


# --- trained LoRAs applied to a plain model -------------------------------------------------
class AppliedLoRA(_WrappedLinear):
    """y = W x + sum_i s_i (alpha_i / r_i) B_i A_i x: frozen LoRA files on a plain Linear at
    sampling time (the base weights stay untouched, so removing them restores the model)."""

    def __init__(self, base: nn.Linear, adapters: list[tuple[torch.Tensor, torch.Tensor, float]]):
        super().__init__()
        self.base = base
        self.scales = [s for _, _, s in adapters]
        device = base.weight.device
        for i, (a, b, _) in enumerate(adapters):   # float32 whatever the base's dtype
            self.register_buffer(f"A{i}", a.float().to(device), persistent=False)
            self.register_buffer(f"B{i}", b.float().to(device), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.to(torch.promote_types(x.dtype, self.A0.dtype))   # at least float32
        delta = sum(s * ((xf @ getattr(self, f"A{i}").t()) @ getattr(self, f"B{i}").t())
                    for i, s in enumerate(self.scales))
        return self.base(x) + delta.to(x.dtype)


def remove_loras(model: nn.Module) -> None:
    """Undo `apply_loras`: every AppliedLoRA back to its plain Linear."""
    for name, module in list(model.named_modules()):
        if isinstance(module, AppliedLoRA):
            _replace(model, name, module.base)


def lora_deltas(loras) -> dict[str, list[tuple[torch.Tensor, torch.Tensor, float]]]:
    """Per target layer: (A, B, s alpha / r) of every (LoRAFile, s) with s != 0."""
    out: dict[str, list] = {}
    for lora, scale in loras:
        if scale == 0:
            continue  # the base model exactly (no wrapper, so the fused attention path stays)
        for layer, (a, b) in lora.layers().items():
            out.setdefault(layer, []).append((a, b, scale * lora.alpha / lora.rank))
    return out


def apply_loras(model: nn.Module, loras) -> list[str]:
    """Wrap the layers `loras` [(LoRAFile, scale), ...] target (any applied before are removed
    first); returns the wrapped names. A layer the model lacks is an error."""
    remove_loras(model)
    deltas = lora_deltas(loras)
    modules = dict(model.named_modules())
    missing = [n for n in deltas if not isinstance(modules.get(n), nn.Linear)]
    if missing:
        raise KeyError(missing[0])
    for name, adapters in deltas.items():
        _replace(model, name, AppliedLoRA(modules[name], adapters))
    return sorted(deltas)


def merge_loras(state: dict[str, torch.Tensor], loras) -> dict[str, torch.Tensor]:
    """A plain state dict with `loras` [(LoRAFile, scale), ...] folded in: W <- W + sum s B A
    (in float32; merged weights keep their dtype)."""
    out = dict(state)
    for layer, adapters in lora_deltas(loras).items():
        key = f"{layer}.weight"
        if key not in out:
            raise KeyError(key)
        w = out[key].float()
        for a, b, s in adapters:
            w = w + s * (b.float() @ a.float())
        out[key] = w.to(state[key].dtype)
    return out


def base_digest(state: dict[str, torch.Tensor]) -> str:
    """sha256 over the base network's tensors: every key (sorted, LoRA matrices left out, LoRA
    wrappers' `.base.` removed), its shape and its values as little-endian float32.

    A hash of values rather than of a file: the same base weights give the same digest in any
    checkpoint format or storage dtype (an official fp16 file, its `svd convert` copy, a
    diffusers folder), and it can be computed from a loaded model as well as from a file.
    """
    import hashlib

    plain = {k.replace(".base.", "."): v for k, v in state.items() if not k.endswith((".lora_A", ".lora_B"))}
    h = hashlib.sha256()
    for key in sorted(plain):
        t = plain[key].detach().to("cpu", torch.float32).contiguous()
        h.update(f"{key}\0{tuple(t.shape)}\0".encode())
        h.update(t.numpy().astype("<f4", copy=False).tobytes())
    return h.hexdigest()
