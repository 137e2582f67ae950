"""A tiny random image-to-video checkpoint in our format, for tests, benchmarks and trying the CLI.

Same structure and code paths as SVD (the reference fixtures' tiny UNet and VAE, a tiny
OpenCLIP image tower), small enough to sample in seconds on a CPU. Its videos are noise.
"""
from __future__ import annotations

import json
from pathlib import Path

# a 2-layer ViT whose projected embedding (40) is the tiny UNet's context_dim
TINY_CLIP = {
    "embed_dim": 40,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def write_tiny_checkpoint(path: str | Path, *, frames: int = 4, width: int = 128, height: int = 64,
                          seed: int = 0) -> Path:
    """Write `path` (.safetensors) and its CLIP model config beside it; returns `path`."""
    import torch

    from svdcli.families.svd.formats import save_ours
    from svdcli.models.conditioner import Conditioner, ConditionerConfig
    from svdcli.models.config import UNetConfig
    from svdcli.models.unet import VideoUNet
    from svdcli.models.vae import VAEConfig, VideoAutoencoder

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clip_json = path.with_name(path.stem + "-clip.json")
    clip_json.write_text(json.dumps(TINY_CLIP))
    torch.manual_seed(seed)
    unet_cfg, vae_cfg = UNetConfig.tiny(), VAEConfig.tiny()
    cond_cfg = ConditionerConfig(clip_arch=str(clip_json), vae=vae_cfg, vector_dim=unet_cfg.adm_in_channels // 3)
    unet, vae, cond = VideoUNet(unet_cfg), VideoAutoencoder(vae_cfg), Conditioner(cond_cfg)
    for module in (unet, vae):  # zero-initialised output layers would make every video flat
        for p in module.parameters():
            if p.ndim > 1 and not p.abs().sum():
                torch.nn.init.normal_(p, std=0.02)
    cond_cfg.clip_arch = clip_json.name  # stored relative: the pair can be moved together
    meta = {"conditioner_config": json.dumps(cond_cfg.to_dict()),
            "sample_defaults": json.dumps({"num_frames": frames, "width": width, "height": height})}
    parts = {"unet": unet.state_dict(), "vae": vae.state_dict(), "conditioner": cond.state_dict()}
    return save_ours(path, parts, unet_cfg, vae_cfg, extra_metadata=meta)
