"""A trained LoRA on its own: a small safetensors file of the LoRA matrices and what they fit.

    <layer>.lora_A (r, in), <layer>.lora_B (out, r)   layer = the UNet module name, e.g.
                                    input_blocks.1.1.time_stack.0.attn1.to_q
    metadata: format svdcli-lora, rank, alpha, target, base_digest (svdcli.models.lora.base_digest
              of the weights it was trained on), base_digest_kind, step, family

`svd train ... --set lora.rank=16` writes one per checkpoint and RUN_DIR/lora.safetensors;
`svd sample --lora` applies them, `svd convert --merge-lora` merges them, both refusing a base
model whose digest differs from the one recorded.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from svdcli.errors import SvdError

FORMAT = "svdcli-lora"
DIGEST_KIND = "sha256-float32-tensors-v1"  # how base_digest is computed (lora.base_digest)
SUFFIXES = (".lora_A", ".lora_B")


@dataclass
class LoRAFile:
    path: Path
    tensors: dict[str, torch.Tensor]      # <layer>.lora_A / <layer>.lora_B
    rank: int
    alpha: float
    target: str
    base_digest: str
    metadata: dict[str, str]

    def layers(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """layer name -> (A, B)."""
        names = sorted({k[: -len(".lora_A")] for k in self.tensors if k.endswith(".lora_A")})
        return {n: (self.tensors[f"{n}.lora_A"], self.tensors[f"{n}.lora_B"]) for n in names}

    def check_base(self, digest: str, what: str) -> None:
        """Refuse a base model other than the one this LoRA was trained on."""
        if digest != self.base_digest:
            raise SvdError(f"{self.path} was trained on another base model than {what} (base digest "
                           f"{self.base_digest[:12]}..., this model {digest[:12]}...); use the checkpoint "
                           "its run was started from with --init")


def save_lora_file(path: Path, state: dict[str, torch.Tensor], *, rank: int, alpha: float, target: str,
                   base_digest: str, extra: dict[str, str] | None = None) -> Path:
    """Write the LoRA matrices of `state` (keys ending in .lora_A / .lora_B) atomically."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().float().contiguous().cpu() for k, v in state.items() if k.endswith(SUFFIXES)}
    if not tensors:
        raise ValueError("no LoRA matrices to save")
    meta = {"format": FORMAT, "rank": str(rank), "alpha": repr(float(alpha)), "target": target,
            "base_digest": base_digest, "base_digest_kind": DIGEST_KIND, **(extra or {})}
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(tensors, str(tmp), metadata=meta)
    tmp.replace(path)
    return path


def read_lora_file(path: str | Path) -> LoRAFile:
    """A LoRA file, checked to be one (format, metadata, paired A/B of rank r)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise SvdError(f"LoRA file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # noqa: BLE001 - any parse failure: not a safetensors file
        raise SvdError(f"{path} is not a readable safetensors file ({str(exc)[:160]})") from None
    if meta.get("format") != FORMAT:
        raise SvdError(f"{path} is not a LoRA file (format {meta.get('format')!r}, expected {FORMAT!r}); "
                       "`svd train --set lora.rank=16` writes RUN_DIR/lora.safetensors")
    if meta.get("base_digest_kind") != DIGEST_KIND:
        raise SvdError(f"{path}: unknown base digest kind {meta.get('base_digest_kind')!r}")
    try:
        lora = LoRAFile(path, tensors, int(meta["rank"]), float(meta["alpha"]), meta.get("target", ""),
                        meta["base_digest"], meta)
    except (KeyError, ValueError) as exc:
        raise SvdError(f"{path}: LoRA metadata incomplete or unreadable ({exc})") from None
    for layer, (a, b) in _pairs(lora).items():
        if a.ndim != 2 or b.ndim != 2 or a.shape[0] != lora.rank or b.shape[1] != lora.rank:
            raise SvdError(f"{path}: {layer} has LoRA matrices of shapes {tuple(a.shape)} and "
                           f"{tuple(b.shape)}, not of rank {lora.rank}")
    return lora


def _pairs(lora: LoRAFile) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    odd = [k for k in lora.tensors if not k.endswith(SUFFIXES)
           or f"{k[:-len('.lora_A')]}{'.lora_B' if k.endswith('.lora_A') else '.lora_A'}" not in lora.tensors]
    if odd:
        raise SvdError(f"{lora.path}: {odd[0]} is not half of a lora_A / lora_B pair")
    return lora.layers()


def read_loras(pairs) -> list[tuple[LoRAFile, float]]:
    """[(path, scale), ...] -> [(LoRAFile, scale), ...]."""
    return [(read_lora_file(p), float(s)) for p, s in pairs]


def check_loras(loras, digest: str, what: str, layers: set[str]) -> None:
    """Every LoRA fits the base model: its digest, and layers the model has."""
    for lora, _ in loras:
        lora.check_base(digest, what)
        missing = sorted(set(lora.layers()) - layers)
        if missing:
            raise SvdError(f"{lora.path} targets layers {what} does not have (e.g. {missing[0]})")
