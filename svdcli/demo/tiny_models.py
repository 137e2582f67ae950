"""Stand-in curation models for the demo: tiny open_clip CLIP and CoCa configs with seeded random
weights, and a random LAION-shaped aesthetic head, written as ordinary files.

Real weights cannot be assumed on a fresh offline machine. These files go through exactly the
code paths real ones do (`--model CONFIG.json --pretrained FILE`), but their scores and captions
are meaningless; the demo says so. With real weights, use the defaults of `svd curate clip` and
`svd curate caption` (ViT-L-14/openai, coca_ViT-L-14) instead.
"""
from __future__ import annotations

import json
from pathlib import Path

TINY_CLIP = {"embed_dim": 768,  # the LAION ViT-L/14 aesthetic MLP takes 768-d embeddings
             "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
             "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2}}
TINY_COCA = {
    "embed_dim": 64, "custom_text": True,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32,
                   "attentional_pool": True, "attn_pooler_heads": 2, "attn_pooler_queries": 8,
                   "output_tokens": True},
    "text_cfg": {"context_length": 76, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2,
                 "embed_cls": True, "output_tokens": True},
    "multimodal_cfg": {"context_length": 76, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2,
                       "attn_pooler_heads": 2},
}


def write_tiny_models(folder: str | Path, seed: int = 0) -> dict[str, str]:
    """Write the stand-in models (once) and return the recipe settings that use them."""
    import logging

    import open_clip
    import torch

    from svdcli.curate.scorers.aesthetic import laion_mlp

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files = {"clip_model": folder / "tiny-clip.json", "clip_weights": folder / "tiny-clip.pt",
             "aesthetic": folder / "tiny-aesthetic.pth", "coca_model": folder / "tiny-coca.json",
             "coca_weights": folder / "tiny-coca.pt"}
    if not all(p.exists() for p in files.values()):
        logging.getLogger().setLevel(logging.ERROR)  # open_clip warns that it starts from random weights
        files["clip_model"].write_text(json.dumps(TINY_CLIP))
        files["coca_model"].write_text(json.dumps(TINY_COCA))
        open_clip.add_model_config(files["clip_model"])
        open_clip.add_model_config(files["coca_model"])
        torch.manual_seed(seed)
        torch.save(open_clip.create_model("tiny-clip").state_dict(), files["clip_weights"])
        torch.save(laion_mlp(768).state_dict(), files["aesthetic"])
        coca = open_clip.create_model("tiny-coca")
        with torch.no_grad():  # open_clip zero-inits some projections; random logits must not all tie
            for p in coca.parameters():
                if not p.any():
                    p.normal_(std=0.02)
        torch.save(coca.state_dict(), files["coca_weights"])
    return {"clip.model": str(files["clip_model"]), "clip.pretrained": str(files["clip_weights"]),
            "clip.aesthetic": str(files["aesthetic"]), "caption.model": str(files["coca_model"]),
            "caption.pretrained": str(files["coca_weights"])}
