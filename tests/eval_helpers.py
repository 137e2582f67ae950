"""Tiny inputs for the `svd eval` tests: random networks in the published layouts, small videos."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

TINY_WIDTH = 1 / 8   # every I3D channel count / 8: the same names, structure and input size


def random_state(module: torch.nn.Module, seed: int = 0) -> dict:
    """A state dict of `module` with random values that keep activations alive through a deep net:
    He-scaled convolutions, batch norms near the identity (scale 1, as the TF-hub I3D has none)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for key, value in module.state_dict().items():
        if not value.dtype.is_floating_point:
            out[key] = value.clone()
        elif key.endswith("running_var"):
            out[key] = torch.rand(value.shape, generator=g) * 0.5 + 0.75
        elif key.endswith("running_mean"):
            out[key] = torch.randn(value.shape, generator=g) * 0.01
        elif value.ndim == 1 and key.endswith("weight"):      # a batch norm's scale
            out[key] = torch.ones(value.shape)
        elif value.ndim == 1:                                  # a bias / batch-norm shift
            out[key] = torch.randn(value.shape, generator=g) * 0.01
        else:
            fan_in = value[0].numel()
            out[key] = torch.randn(value.shape, generator=g) * (2.0 / fan_in) ** 0.5
    return out


def styleganv_state(seed: int = 0, width: float = TINY_WIDTH) -> dict:
    """Random I3D tensors under the names of StyleGAN-V's i3d_torchscript.pt (the TF-hub port)."""
    from svdcli.eval.i3d import I3D, I3DConfig

    return random_state(I3D(I3DConfig(width=width)), seed)


def tiny_i3d_file(folder: Path, seed: int = 0) -> Path:
    """A converted tiny I3D file, made the way a user makes one: a .pt state dict through `convert`."""
    from svdcli.eval.networks import convert

    src = folder / f"i3d_state_{seed}.pt"
    if not (folder / f"i3d_{seed}.safetensors").exists():
        torch.save(styleganv_state(seed), src)
        convert(src, folder / f"i3d_{seed}.safetensors")
    return folder / f"i3d_{seed}.safetensors"


def moving_videos(n: int, frames: int = 16, size: int = 32, seed: int = 0, speed: float = 1.0) -> np.ndarray:
    """(n, frames, size, size, 3) uint8: smooth random textures drifting by `speed` px per frame."""
    import cv2

    rng = np.random.default_rng(seed)
    out = np.empty((n, frames, size, size, 3), np.uint8)
    for i in range(n):
        base = cv2.GaussianBlur(rng.integers(0, 256, (size * 3, size * 3, 3)).astype(np.uint8), (0, 0), 2.0)
        dx, dy = rng.normal(size=2)
        for t in range(frames):
            x0 = int(size + round(speed * t * dx)) % (2 * size)
            y0 = int(size + round(speed * t * dy)) % (2 * size)
            out[i, t] = base[y0:y0 + size, x0:x0 + size]
    return out


def write_npy_folder(folder: Path, videos: np.ndarray) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, video in enumerate(videos):
        np.save(folder / f"v{i:04d}.npy", video)
    return folder
