"""Precomputed VAE latents stored in each sample (`svd pack --latents`), so training skips the encoder.

Each sample gets `<key>.latents.npy`: float16 (N, 4, H/8, W/8), one latent per stored frame, the
VAE posterior MODE of the frame in [-1, 1] times SCALE_FACTOR (0.18215), i.e. the diffusion latent
the UNet consumes. The mode, not a posterior sample: a stored sample would repeat the same noise
every epoch, and the std is not kept. The sample's json records which VAE made them (`latents`:
source, weights hash, scale factor), so training can refuse latents from another VAE.

VAE sources: `tiny:SEED` (the seeded tiny VAE that `model: tiny` training with `seed: SEED`
builds), an official SVD .safetensors, our checkpoint, or a `svd train` run dir (the VAE its
config trains with). The model family builds it (svdcli.families.pack_vae): the VAE is the
family's part; this module names no family and imports no training code.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np


LATENTS_EXT = "latents.npy"
SCALE = 0.18215  # == svdcli.models.vae.SCALE_FACTOR (not imported: this module must stay torch-free at import)
ENCODE_CHUNK = 8  # frames per encoder call: bounds activation memory at full resolution


@dataclass(frozen=True)
class LatentSpec:
    """Identity of the latents in a pack: what made them and how they are scaled."""

    source: str
    vae_hash: str
    scale_factor: float = SCALE
    posterior: str = "mode"
    dtype: str = "float16"

    def to_dict(self) -> dict:
        return {"source": self.source, "vae_hash": self.vae_hash, "scale_factor": self.scale_factor,
                "posterior": self.posterior, "dtype": self.dtype}


def vae_hash(vae) -> str:
    """sha1 over the VAE's parameter names, shapes and float32 values (device independent)."""
    h = hashlib.sha1()
    for name, tensor in sorted(vae.state_dict().items()):
        arr = tensor.detach().float().cpu().contiguous().numpy()
        h.update(f"{name}:{tuple(arr.shape)};".encode())
        h.update(arr.tobytes())
    return h.hexdigest()[:16]


def load_vae(source: str):
    """The VideoAutoencoder named by `source` (see the module docstring), in eval mode on CPU."""
    from svdcli.families import pack_vae

    return pack_vae(source)


_CACHE: dict[str, tuple] = {}


def latent_encoder(source: str) -> tuple:
    """(vae on its device, LatentSpec), built once per process (pack workers reuse it per shard)."""
    if source not in _CACHE:
        import torch

        vae = load_vae(source)
        spec = LatentSpec(source=source, vae_hash=vae_hash(vae))
        _CACHE[source] = (vae.to("cuda" if torch.cuda.is_available() else "cpu"), spec)
    return _CACHE[source]


def encode_latents(vae, frames: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) uint8 frames -> float16 (N, 4, H/8, W/8) = SCALE * posterior mode."""
    import torch

    device = next(vae.parameters()).device
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)  # (N, H, W, 3) -> (N, 3, H, W)
    x = x.to(device).float().div_(127.5).sub_(1.0)  # same mapping as the loader's to_model_range
    with torch.no_grad():
        z = vae.encode(x, sample=False, chunk=ENCODE_CHUNK)
    return (SCALE * z.float()).cpu().numpy().astype(np.float16)
