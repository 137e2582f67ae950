"""The frozen encoders of training: the VAE (target latents and the conditioning-frame latent),
the CLIP image embedder (i2v crossattn) and the text embedder (t2v crossattn).

- model `tiny`: the reference fixture's tiny VAE and tiny OpenCLIP towers with seeded random
  weights (tests, CPU development). Same code paths as the full model.
- model `svd`: the VAE and OpenCLIP ViT-H-14 image tower from an official SVD checkpoint file
  (`weights:` in the config, e.g. svd.safetensors from stabilityai/stable-video-diffusion-img2vid).
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from svdcli.errors import MissingWeightsError, SvdError
from svdcli.train.conditioning import Encoders
from svdcli.train.config import TrainConfig

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
SVD_FILE_HELP = ("the official SVD checkpoint (svd.safetensors or svd_xt.safetensors from "
                 "huggingface.co/stabilityai/stable-video-diffusion-img2vid[-xt]); set `weights: PATH` "
                 "in the training config or pass --set weights=PATH")


class ImageEmbedder(nn.Module):
    """sgm FrozenOpenCLIPImagePredictionEmbedder: resize to the tower's size (bicubic, antialias,
    no crop), CLIP-normalise, project. Frames (N, 3, H, W) in [-1, 1] -> (N, D)."""

    def __init__(self, visual: nn.Module, size: int):
        super().__init__()
        self.visual, self.size = visual, size
        self.register_buffer("mean", torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(CLIP_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(frames.float(), size=(self.size, self.size), mode="bicubic",
                          align_corners=True, antialias=True)
        x = ((x + 1.0) / 2.0 - self.mean) / self.std
        return self.visual(x)


class TextEmbedder(nn.Module):
    """OpenCLIP text tower tokens (N, L, D) of captions, as SD 2.1's FrozenOpenCLIPEmbedder."""

    def __init__(self, text: nn.Module, context_length: int):
        super().__init__()
        self.text, self.context_length = text, context_length

    def forward(self, captions: list[str]) -> torch.Tensor:
        import open_clip

        device = next(self.text.parameters()).device
        tokens = open_clip.tokenize(captions, context_length=self.context_length).to(device)
        _, tokens_out = self.text(tokens)
        return tokens_out                      # (N, L, D)


def tiny_encoders(unet_cfg, seed: int) -> Encoders:
    """Seeded random tiny VAE and OpenCLIP towers sized for UNetConfig.tiny()."""
    from open_clip.transformer import TextTransformer, VisionTransformer

    from svdcli.models.vae import ImageAutoencoder, VAEConfig, VideoAutoencoder

    torch.manual_seed(seed + 1)
    d = unet_cfg.context_dim
    visual = VisionTransformer(image_size=32, patch_size=8, width=32, layers=1, heads=2, mlp_ratio=2.0,
                               output_dim=d)
    text = TextTransformer(context_length=16, vocab_size=49408, width=d, heads=2, layers=1,
                           output_dim=d, output_tokens=True)
    return Encoders(vae=VideoAutoencoder(VAEConfig.tiny()), cond_vae=ImageAutoencoder(VAEConfig.tiny()),
                    embed_image=ImageEmbedder(visual, 32), embed_text=TextEmbedder(text, 16),
                    context_dim=d, adm_in_channels=unet_cfg.adm_in_channels)


def _take(state: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def svd_encoders(unet_cfg, weights: str | None, cond_mode: str) -> Encoders:
    """VAE + ViT-H-14 image tower from an official SVD checkpoint file."""
    import open_clip
    from safetensors.torch import load_file

    from svdcli.models.vae import ImageAutoencoder, VAEConfig, VideoAutoencoder

    if cond_mode == "t2v":
        raise SvdError("text-to-video with the full-size model needs the SD 2.1 OpenCLIP ViT-H-14 text "
                       "tower, which this trainer does not load yet; use model: tiny or cond.mode i2v")
    if not weights or not Path(weights).is_file():
        raise MissingWeightsError(f"model svd needs {SVD_FILE_HELP} (not found: {weights or 'not set'})")
    state = load_file(str(weights))
    vae, cond_vae = VideoAutoencoder(VAEConfig.svd()), ImageAutoencoder(VAEConfig.svd())
    vae.load_state_dict(_take(state, "first_stage_model."), strict=True)
    cond_vae.load_state_dict(_take(state, "conditioner.embedders.3.encoder."), strict=True)
    clip = open_clip.create_model("ViT-H-14", pretrained=None)
    clip.visual.load_state_dict(_take(state, "conditioner.embedders.0.open_clip.model.visual."), strict=True)
    return Encoders(vae=vae, cond_vae=cond_vae, embed_image=ImageEmbedder(clip.visual, 224),
                    embed_text=None, context_dim=unet_cfg.context_dim,
                    adm_in_channels=unet_cfg.adm_in_channels)


def build_encoders(cfg: TrainConfig, unet_cfg) -> Encoders:
    if cfg.model == "tiny":
        return tiny_encoders(unet_cfg, cfg.seed)
    return svd_encoders(unet_cfg, cfg.weights, cfg.cond.mode)
