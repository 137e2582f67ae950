"""Text towers of the VDM family: captions -> token features (B, L, D) for cross-attention.

The paper conditions on BERT-large embeddings; here the optional tower is either a tiny
seeded byte-level embedding (tests, demos: no download) or SD 2.1's OpenCLIP ViT-H-14 text
tower, whose weights must be present locally (a clear error says which file otherwise).
"""
from __future__ import annotations

import torch
from torch import nn

from svdcli.errors import MissingWeightsError

TINY_LENGTH = 16


class TinyText(nn.Module):
    """UTF-8 bytes of a caption -> (L, D) features: a seeded random embedding plus positions."""

    def __init__(self, dim: int, seed: int):
        super().__init__()
        gen = torch.Generator().manual_seed(seed + 17)
        self.bytes = nn.Parameter(torch.randn(257, dim, generator=gen), requires_grad=False)
        self.pos = nn.Parameter(torch.randn(TINY_LENGTH, dim, generator=gen) * 0.1, requires_grad=False)

    def forward(self, captions: list[str]) -> torch.Tensor:
        ids = torch.full((len(captions), TINY_LENGTH), 256, dtype=torch.long)   # 256: padding
        for row, caption in enumerate(captions):
            data = list(caption.encode("utf-8"))[:TINY_LENGTH]
            ids[row, :len(data)] = torch.tensor(data, dtype=torch.long)
        return self.bytes[ids.to(self.bytes.device)] + self.pos      # (B, L, D)


def build_text_tower(kind: str, dim: int, seed: int) -> nn.Module | None:
    """The frozen tower of `text:` (none, tiny, open_clip) or None."""
    if kind == "none":
        return None
    if kind == "tiny":
        return TinyText(dim, seed).eval()
    from svdcli.models.conditioner import CLIP_ARCH, CLIP_TAG, TextEmbedder

    try:
        return TextEmbedder(CLIP_ARCH, CLIP_TAG).eval().requires_grad_(False)
    except MissingWeightsError as exc:
        raise MissingWeightsError(
            f"vdm text: open_clip needs the OpenCLIP {CLIP_ARCH} text weights ({CLIP_TAG}, "
            f"open_clip_pytorch_model.bin from https://huggingface.co/laion/CLIP-ViT-H-14-laion2B-s32B-b79K); "
            f"or train with text: tiny or text: none. {exc}") from None
