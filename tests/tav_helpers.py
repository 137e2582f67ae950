"""Tiny random image models for the Tune-A-Video tests: an export as `svd train --stage image`
writes it (SVD family format, EDM) and an SD 2.1-layout single file (v / eps), both with random
weights on every path so the text and the new layers matter."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from random_weights import randomize_

SIZE, FRAMES = 64, 4


def image_base(path: Path, seed: int = 0) -> Path:
    """A tiny t2v image-stage export written by the svd family's own `save` (what `svd train` calls)."""
    from svdcli.families import family_for
    from svdcli.models.config import UNetConfig
    from svdcli.models.unet import VideoUNet
    from svdcli.train.config import config_from_dict

    cfg = config_from_dict({"family": "svd", "stage": "image", "model": "tiny", "seed": seed, "precision": "fp32",
                            "cond": {"mode": "t2v", "dropout": 0.0},
                            "data": {"frames": 1, "height": SIZE, "width": SIZE}})
    unet = VideoUNet(UNetConfig.tiny())
    randomize_(unet, seed)
    state = {"net." + k: v for k, v in unet.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    family_for("svd").save(path, state, cfg, {"family": "svd", "train_config": json.dumps(cfg.to_dict()),
                                              "step": "1", "ema": "false"})
    return path


def sd21_base(path: Path, seed: int = 0) -> Path:
    """A tiny SD 2.1-layout file: `model.diffusion_model.*` (4 input channels, no vector) and
    `first_stage_model.*` (the image VAE with quant convs)."""
    from safetensors.torch import save_file

    from svdcli.families.svd.inflate import is_temporal
    from svdcli.models.config import UNetConfig
    from svdcli.models.unet import VideoUNet
    from svdcli.models.vae import ImageAutoencoder, VAEConfig

    torch.manual_seed(seed)
    unet = VideoUNet(UNetConfig.tiny(in_channels=4, adm_in_channels=None, num_head_channels=16))
    randomize_(unet, seed)
    vae = ImageAutoencoder(VAEConfig.tiny())
    randomize_(vae, seed + 1)
    flat = {"model.diffusion_model." + k: v for k, v in unet.state_dict().items() if not is_temporal(k)}
    flat.update({"first_stage_model." + k: v for k, v in vae.state_dict().items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in flat.items()}, str(path))
    return path


def moving_square(frames: int = FRAMES, size: int = SIZE, step: int = 8) -> np.ndarray:
    """(T, H, W, 3) uint8: a bright square moving right `step` pixels a frame on a gradient."""
    y, x = np.mgrid[0:size, 0:size]
    out = []
    for t in range(frames):
        img = np.stack([x * 2, y * 2, np.full_like(x, 60)], -1).astype(np.uint8)
        x0 = 8 + step * t
        img[20:40, x0:x0 + 20] = (250, 240, 30)
        out.append(img)
    return np.stack(out)


def write_clip(path: Path, frames: np.ndarray, fps: float = 8.0) -> Path:
    from svdcli.shards.frames import encode_mp4

    path.write_bytes(encode_mp4(frames, fps, crf=10))
    return path
