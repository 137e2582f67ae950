"""The frozen encoders of SVD training: the VAE (target latents and the conditioning-frame
latent), the CLIP image embedder (i2v crossattn) and the text embedder (t2v crossattn).

- model `tiny`: the reference fixture's tiny VAE and tiny OpenCLIP towers with seeded random
  weights (tests, CPU development). Same code paths as the full model. `weights:` may name a
  file whose (tiny) VAE replaces the seeded one, for the target latents and the
  conditioning-frame latent alike: a random VAE does not reconstruct images, so a tiny model
  whose samples are judged in pixels needs one fitted to its data.
- model `svd`: the VAE and OpenCLIP ViT-H-14 image tower from an official SVD checkpoint file
  (`weights:` in the config, e.g. svd.safetensors from stabilityai/stable-video-diffusion-img2vid);
  t2v adds SD 2.1's ViT-H-14 text tower (laion2b_s32b_b79k, looked up by the conditioner).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from svdcli.errors import MissingWeightsError, SvdError
from svdcli.families.svd.config import SVDConfig, unet_config



@dataclass
class Encoders:
    """Frozen models that turn pixels and captions into latents and embeddings."""

    vae: nn.Module                       # VideoAutoencoder: .encode(frames, sample=, generator=)
    encode_cond_frame: Callable | None   # frames (N, 3, H, W) -> VAE posterior mode, not scaled
    embed_image: Callable | None         # frames (N, 3, H, W) in [-1, 1] -> (N, 1, D)
    embed_text: Callable | None          # list[str] -> (N, L, D)
    context_dim: int
    adm_in_channels: int | None

    def to(self, device) -> "Encoders":
        for m in (self.vae, self.encode_cond_frame, self.embed_image, self.embed_text):
            if isinstance(m, nn.Module):
                m.to(device).eval().requires_grad_(False)
        return self


SVD_FILE_HELP = ("the official SVD checkpoint (svd.safetensors or svd_xt.safetensors from "
                 "huggingface.co/stabilityai/stable-video-diffusion-img2vid[-xt]); set `weights: PATH` "
                 "in the training config or pass --set weights=PATH")


class TinyImageEmbedder(nn.Module):
    """A tiny OpenCLIP vision tower behind the same preprocessing as the full ImageEmbedder:
    antialiased resize (no crop), CLIP mean/std; frames (N, 3, H, W) in [-1, 1] -> (N, 1, D)."""

    def __init__(self, visual: nn.Module, size: int):
        super().__init__()
        self.visual, self.size = visual, size

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        from svdcli.models.conditioner import CLIP_MEAN, CLIP_STD, resize_antialiased

        x = (resize_antialiased(frames.float(), (self.size, self.size)) + 1.0) / 2.0
        mean = torch.tensor(CLIP_MEAN, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(CLIP_STD, device=x.device).view(1, 3, 1, 1)
        return self.visual((x - mean) / std)[:, None]


class TinyTextEmbedder(nn.Module):
    """A tiny OpenCLIP text tower: captions -> token features (N, L, D)."""

    def __init__(self, text: nn.Module, context_length: int):
        super().__init__()
        self.text, self.context_length = text, context_length

    def forward(self, captions: list[str]) -> torch.Tensor:
        import open_clip

        device = next(self.text.parameters()).device
        tokens = open_clip.tokenize(captions, context_length=self.context_length).to(device)
        _, tokens_out = self.text(tokens)
        return tokens_out                      # (N, L, D)


class ModeEncoder(nn.Module):
    """Frames (N, 3, H, W) in [-1, 1] -> the posterior mode of `vae`, not scaled: the conditioning-frame
    latent taken from the run's own VAE, as SVD's conditioner takes it from a copy of the first
    stage's encoder (a fitted tiny VAE must replace the seeded one here too, or the model is
    conditioned on a random projection of the image that no decoder understands)."""

    def __init__(self, vae: nn.Module):
        super().__init__()
        self.vae = vae

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.vae.encode(frames)


def tiny_encoders(unet_cfg, seed: int) -> Encoders:
    """Seeded random tiny VAE and OpenCLIP towers sized for UNetConfig.tiny()."""
    from open_clip.transformer import TextTransformer, VisionTransformer

    from svdcli.models.conditioner import CondFrameEncoder
    from svdcli.models.vae import VAEConfig, VideoAutoencoder

    torch.manual_seed(seed + 1)
    d = unet_cfg.context_dim
    visual = VisionTransformer(image_size=32, patch_size=8, width=32, layers=1, heads=2, mlp_ratio=2.0,
                               output_dim=d)
    text = TextTransformer(context_length=16, vocab_size=49408, width=d, heads=2, layers=1,
                           output_dim=d, output_tokens=True)
    return Encoders(vae=VideoAutoencoder(VAEConfig.tiny()), encode_cond_frame=CondFrameEncoder(VAEConfig.tiny()),
                    embed_image=TinyImageEmbedder(visual, 32), embed_text=TinyTextEmbedder(text, 16),
                    context_dim=d, adm_in_channels=unet_cfg.adm_in_channels)


def svd_encoders(unet_cfg, weights: str | None, cond_mode: str) -> Encoders:
    """VAE and conditioner (ViT-H-14 image tower, conditioning-frame VAE) of an official SVD file;
    for t2v, SD 2.1's OpenCLIP ViT-H-14 text tower (found by svdcli.models.conditioner)."""
    from svdcli.families.svd.formats import load_checkpoint
    from svdcli.models.conditioner import Conditioner, ConditionerConfig
    from svdcli.models.vae import VideoAutoencoder

    if not weights or not Path(weights).is_file():
        raise MissingWeightsError(f"model svd needs {SVD_FILE_HELP} (not found: {weights or 'not set'})")
    ckpt = load_checkpoint(weights)
    missing = {"vae", "conditioner"} - set(ckpt.parts)
    if missing:
        raise SvdError(f"{weights} lacks the {', '.join(sorted(missing))} weights; {SVD_FILE_HELP}")
    vae = VideoAutoencoder(ckpt.vae_config)
    vae.load_state_dict(ckpt.parts["vae"], strict=True)
    conditioner = Conditioner(ConditionerConfig.svd())
    conditioner.load_state_dict(ckpt.parts["conditioner"], strict=True)
    text = sd_text_tower() if cond_mode == "t2v" else None
    return Encoders(vae=vae, encode_cond_frame=conditioner.frame_encoder,
                    embed_image=conditioner.image_embedder, embed_text=text,
                    context_dim=unet_cfg.context_dim, adm_in_channels=unet_cfg.adm_in_channels)


def sd_text_tower() -> nn.Module:
    """SD 2.x's OpenCLIP ViT-H-14 text tower (penultimate layer), or a missing-weights error naming it."""
    from svdcli.models.conditioner import CLIP_ARCH, CLIP_TAG, TextEmbedder

    try:
        return TextEmbedder(CLIP_ARCH, CLIP_TAG)
    except MissingWeightsError:
        raise
    except Exception as exc:  # noqa: BLE001 - open_clip's download / lookup failures
        raise MissingWeightsError(f"SD 2.x's text tower (open_clip {CLIP_ARCH}, {CLIP_TAG}) is not available "
                                  f"here ({str(exc)[:200]}); put open_clip_pytorch_model.bin of "
                                  "laion/CLIP-ViT-H-14-laion2B-s32B-b79K in the Hugging Face cache") from None


def build_encoders(own: SVDConfig, seed: int, structure_only: bool = False) -> Encoders:
    """The encoders of a config's `model:` preset (`seed`: the run's seed, for the tiny ones);
    `structure_only`: the full-size modules without their weights (for the planner, on meta)."""
    if own.model == "tiny":
        encoders = tiny_encoders(unet_config("tiny"), seed)
        if own.weights and not structure_only:  # a fitted tiny VAE: the same structure
            encoders.vae = file_vae(Path(own.weights), "weights")
            encoders.encode_cond_frame = ModeEncoder(encoders.vae)
        return encoders
    if structure_only:
        return svd_encoder_structure(unet_config(own.model), own.cond.mode)
    return svd_encoders(unet_config(own.model), own.weights, own.cond.mode)


def svd_encoder_structure(unet_cfg, cond_mode: str) -> Encoders:
    """The modules `svd_encoders` loads, with random weights: SVD's VAE, its conditioner (ViT-H-14
    image tower, conditioning-frame VAE) and, for t2v, the ViT-H-14 text tower."""
    from svdcli.models.conditioner import CLIP_ARCH, Conditioner, ConditionerConfig, TextEmbedder
    from svdcli.models.vae import VAEConfig, VideoAutoencoder

    conditioner = Conditioner(ConditionerConfig.svd())
    text = TextEmbedder(CLIP_ARCH, None) if cond_mode == "t2v" else None
    return Encoders(vae=VideoAutoencoder(VAEConfig.svd()), encode_cond_frame=conditioner.frame_encoder,
                    embed_image=conditioner.image_embedder, embed_text=text,
                    context_dim=unet_cfg.context_dim, adm_in_channels=unet_cfg.adm_in_channels)


def pack_vae(source: str) -> nn.Module:
    """The VideoAutoencoder `svd pack --latents SOURCE` names, in eval mode on CPU: `tiny:SEED`
    (the seeded tiny VAE that `model: tiny` training with `seed: SEED` builds), an official SVD
    .safetensors or our checkpoint, or a `svd train` run dir (the VAE its config trains with)."""
    if source.startswith("tiny:"):
        try:
            seed = int(source.split(":", 1)[1])
        except ValueError:
            raise SvdError(f"--latents {source!r}: write tiny:SEED with an integer seed, e.g. tiny:0") from None
        # built by the training code itself, so the random draws before the VAE match exactly
        return tiny_encoders(unet_config("tiny"), seed).vae.eval().requires_grad_(False)
    path = Path(source)
    if path.is_dir():
        return _run_dir_vae(path)
    if not path.is_file():
        raise MissingWeightsError(f"--latents {source}: no such file or run dir; pass an official SVD file "
                                  "(svd.safetensors from huggingface.co/stabilityai/stable-video-diffusion-img2vid), "
                                  "our checkpoint, a `svd train` run dir, or tiny:SEED")
    return file_vae(path)


def _run_dir_vae(folder: Path) -> nn.Module:
    from svdcli import runs

    if not runs.config_file(folder).is_file():
        raise SvdError(f"--latents {folder}: a folder must be a `svd train` run dir (no config.yaml in it)")
    values = runs.read_config(folder)
    own = SVDConfig.from_dict(values)
    if own.model == "tiny":
        return pack_vae(own.weights or f"tiny:{int(values.get('seed', 0))}")
    if not own.weights:
        raise MissingWeightsError(f"--latents {folder}: the run trains model {own.model} but its config sets no "
                                  "`weights:` file to take the VAE from; pass the official SVD file instead")
    return pack_vae(own.weights)


def file_vae(path: Path, what: str = "--latents") -> nn.Module:
    """The VideoAutoencoder of a checkpoint file (`what`: the option that named it, for errors),
    in eval mode without gradients: an official SVD file or ours as it is, an SD 2.1 image VAE
    inflated into the temporal decoder (svdcli.models.vae.inflate_image_vae)."""
    from svdcli.families.svd.formats import load_checkpoint
    from svdcli.models.vae import VideoAutoencoder, inflate_image_vae

    ckpt = load_checkpoint(path)
    state = ckpt.parts.get("vae")
    if not state or ckpt.vae_config is None:
        raise SvdError(f"{what} {path}: the file holds no VAE weights (parts: {', '.join(ckpt.parts) or 'none'})")
    if "quant_conv.weight" in state:
        state = inflate_image_vae(state, ckpt.vae_config)
    vae = VideoAutoencoder(ckpt.vae_config)
    missing, unexpected = vae.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise SvdError(f"{what} {path}: its VAE does not fit SVD's temporal decoder ({len(missing)} missing, "
                       f"e.g. {missing[:1]}; {len(unexpected)} unexpected, e.g. {unexpected[:1]})")
    return vae.eval().requires_grad_(False)
