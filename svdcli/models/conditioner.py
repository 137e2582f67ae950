"""SVD's conditioning: CLIP image embedding, micro-conditioning vector and conditioning-frame latent.

`Conditioner` has the official `conditioner.embedders.{0..4}` layout (0: OpenCLIP ViT-H-14
image tower, 1: fps_id, 2: motion_bucket_id, 3: SD VAE for the conditioning frame, 4: cond_aug;
1, 2 and 4 have no parameters), so the official checkpoint loads by stripping `conditioner.`.
Images are (B, 3, H, W) in [-1, 1]. `TextEmbedder` is SD 2.1's text conditioning for
text-to-video.

Weights: the embedders default to the open_clip tag `laion2b_s32b_b79k`, looked up as a file
path, in `$SVD_WEIGHTS_DIR` and in the Hugging Face cache (downloaded when the hub is reachable);
a missing file raises MissingWeightsError saying what to fetch and where to put it. With an
official SVD checkpoint the CLIP tower comes from the checkpoint itself: `Conditioner` (and
`pretrained=None`) builds without weights; build it under `torch.device("meta")` and load with
`load_state_dict(..., assign=True)` to skip a slow random init of ViT-H.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from svdcli.errors import MissingWeightsError, SvdError
from svdcli.models.vae import ImageAutoencoder, VAEConfig

CLIP_ARCH = "ViT-H-14"
CLIP_TAG = "laion2b_s32b_b79k"
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


# --- micro-conditioning vector --------------------------------------------------------------
def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding [cos(t f_i), sin(t f_i)], f_i = max_period^(-i/half) (sgm, in float32)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs.to(t.device)[None]  # (B, half)
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return F.pad(emb, (0, dim % 2))


def vector_embedding(fps_id, motion_bucket_id, cond_aug, dim: int = 256) -> torch.Tensor:
    """`vector` conditioning (B, 3*dim): sinusoidal embeddings of the three scalars, in that order.

    Each argument is a number or a (B,) tensor (sgm's ConcatTimestepEmbedderND per key).
    """
    values = [torch.as_tensor(v, dtype=torch.float32).reshape(-1) for v in (fps_id, motion_bucket_id, cond_aug)]
    batch = max(len(v) for v in values)
    return torch.cat([timestep_embedding(v.expand(batch), dim) for v in values], dim=1)


class ScalarEmbedder(nn.Module):
    """A parameter-free embedder of one scalar per sample (official embedders 1, 2 and 4)."""

    def __init__(self, key: str, dim: int):
        super().__init__()
        self.key, self.dim = key, dim

    def forward(self, value: torch.Tensor) -> torch.Tensor:
        return timestep_embedding(value.reshape(-1), self.dim)


# --- open_clip models and their weights -----------------------------------------------------
def build_open_clip(arch: str, pretrained: str | None = None) -> nn.Module:
    """An open_clip CLIP of architecture `arch` (a name or a model-config .json).

    Without `pretrained` the weights are random (they come from a checkpoint later). With it,
    the file is found first, so a missing one fails at once, and the model is built on the meta
    device and takes the file's tensors: no seconds spent on a random init of ViT-H.
    """
    import open_clip
    from open_clip.factory import load_state_dict
    from open_clip.model import CLIP

    from svdcli.weights import register_model_config

    cfg = open_clip.get_model_config(register_model_config(arch))
    if cfg is None:
        raise SvdError(f"unknown open_clip model {arch!r} (give a name open_clip knows or a model-config .json)")
    if not pretrained:
        return CLIP(**cfg)
    path = resolve_open_clip_weights(arch, pretrained)
    with torch.device("meta"):
        model = CLIP(**cfg)
    try:
        model.load_state_dict(load_state_dict(path), strict=True, assign=True)
    except (RuntimeError, KeyError, OSError, ValueError) as exc:
        raise SvdError(f"cannot load {path} into open_clip {arch}: {str(exc)[:300]}") from exc
    return model


def resolve_open_clip_weights(arch: str, pretrained: str) -> str:
    """A local file for `pretrained` (file path, `$SVD_WEIGHTS_DIR/<arch>-<tag>.*`, HF cache/hub)."""
    from svdcli.weights import open_clip_weights, weights_dir

    if Path(pretrained).expanduser().is_file():
        return str(Path(pretrained).expanduser())
    stem = f"{Path(arch).stem}-{pretrained}"
    for suffix in (".safetensors", ".bin", ".pt"):
        if (weights_dir() / (stem + suffix)).is_file():
            return str(weights_dir() / (stem + suffix))
    try:
        return open_clip_weights(arch, pretrained).checkpoint
    except MissingWeightsError as exc:
        raise MissingWeightsError(
            f"{exc}; or put it in {weights_dir()} (the folder $SVD_WEIGHTS_DIR names) as "
            f"{stem}.safetensors or {stem}.bin. With an official SVD checkpoint no separate CLIP "
            f"file is needed: its conditioner carries the image tower.") from None


def resize_antialiased(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Gaussian blur (sigma = (factor-1)/2, 2-sigma odd kernel) then bicubic, align_corners=True.

    The official embedder's kornia `resize(..., antialias=True)`; no crop, so aspect is squashed.
    """
    h, w = x.shape[-2:]
    if (h, w) == tuple(size):
        return x
    if h > size[0] or w > size[1]:  # kornia blurs only when some side shrinks
        sigmas = [max((n / s - 1.0) / 2.0, 0.001) for n, s in ((h, size[0]), (w, size[1]))]
        ks = [int(max(4.0 * sig, 3)) | 1 for sig in sigmas]  # 2 sigmas each side, made odd
        x = _blur_1d(x, ks[1], sigmas[1], dim=-1)
        x = _blur_1d(x, ks[0], sigmas[0], dim=-2)
    return F.interpolate(x, size=tuple(size), mode="bicubic", align_corners=True)


def _blur_1d(x: torch.Tensor, k: int, sigma: float, dim: int) -> torch.Tensor:
    taps = torch.arange(k, dtype=x.dtype, device=x.device) - k // 2
    kernel = torch.exp(-taps**2 / (2.0 * sigma**2))
    kernel = kernel / kernel.sum()
    c = x.shape[1]
    if dim == -1:
        weight, pad = kernel.view(1, 1, 1, k), (k // 2, k // 2, 0, 0)
    else:
        weight, pad = kernel.view(1, 1, k, 1), (0, 0, k // 2, k // 2)
    return F.conv2d(F.pad(x, pad, mode="reflect"), weight.expand(c, 1, *weight.shape[2:]), groups=c)


# --- embedders -----------------------------------------------------------------------------
class ImageEmbedder(nn.Module):
    """OpenCLIP image tower: image (B, 3, H, W) in [-1, 1] -> projected embedding (B, 1, D).

    The text transformer is dropped as in the official checkpoint, which still carries the
    text tower's embeddings, ln_final and projection: they are kept so every key loads.
    """

    def __init__(self, arch: str = CLIP_ARCH, pretrained: str | None = CLIP_TAG):
        super().__init__()
        model = build_open_clip(arch, pretrained)
        del model.transformer
        model.register_buffer("attn_mask", None, persistent=False)  # text-only; not left on meta
        self.open_clip = nn.Module()  # official key path: open_clip.model.*
        self.open_clip.model = model

    @property
    def image_size(self) -> tuple[int, int]:
        size = self.open_clip.model.visual.image_size
        return tuple(size) if isinstance(size, (tuple, list)) else (size, size)

    def preprocess(self, image: torch.Tensor) -> torch.Tensor:
        """[-1, 1] -> antialiased bicubic resize to the tower's size (no crop), CLIP mean/std."""
        x = resize_antialiased(image, self.image_size)
        x = (x + 1.0) / 2.0
        # constants, not buffers: a model built on the meta device loads with assign=True
        mean = torch.tensor(CLIP_MEAN, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(CLIP_STD, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        z = self.open_clip.model.visual(self.preprocess(image))  # (B, D)
        return z.to(image.dtype)[:, None, :]


class TextEmbedder(nn.Module):
    """OpenCLIP text tower, SD 2.1 style: token features of the penultimate layer after ln_final.

    texts -> (B, 77, width); the visual tower is dropped (SD 2.1's `cond_stage_model.model.*`).
    """

    def __init__(self, arch: str = CLIP_ARCH, pretrained: str | None = CLIP_TAG):
        super().__init__()
        import open_clip

        from svdcli.weights import register_model_config

        model = build_open_clip(arch, pretrained)
        del model.visual
        model.register_buffer("attn_mask", None, persistent=False)  # built per call in forward
        self.model = model
        self.tokenizer = open_clip.get_tokenizer(register_model_config(arch))

    def forward(self, texts: list[str] | torch.Tensor) -> torch.Tensor:
        """Texts or token ids (B, L) -> (B, L, width), L = 77 for SD 2.1."""
        m = self.model
        device = m.token_embedding.weight.device
        tokens = (texts if isinstance(texts, torch.Tensor) else self.tokenizer(texts)).to(device)
        x = m.token_embedding(tokens) + m.positional_embedding  # (B, L, width)
        # causal mask built here, not open_clip's buffer, which a meta-device build leaves empty
        length = x.shape[1]
        mask = torch.full((length, length), float("-inf"), device=x.device, dtype=x.dtype).triu_(1)
        if not m.transformer.batch_first:
            x = x.transpose(0, 1)  # (B, L, width) -> (L, B, width)
        for block in m.transformer.resblocks[:-1]:  # penultimate layer: skip the last block
            x = block(x, attn_mask=mask)
        if not m.transformer.batch_first:
            x = x.transpose(0, 1)
        return m.ln_final(x)


class CondFrameEncoder(nn.Module):
    """Conditioning-frame latent: the SD VAE's posterior mode, not scaled (official embedder 3)."""

    def __init__(self, cfg: VAEConfig):
        super().__init__()
        self.encoder = ImageAutoencoder(cfg)

    def forward(self, frame: torch.Tensor) -> torch.Tensor:
        return self.encoder.encode(frame)  # (B, z, H/8, W/8)


# --- the conditioner -----------------------------------------------------------------------
@dataclass
class ConditionerConfig:
    """Image-to-video conditioner; `clip_pretrained` None means weights come from a checkpoint."""

    clip_arch: str = CLIP_ARCH
    clip_pretrained: str | None = None
    vae: VAEConfig = field(default_factory=VAEConfig.svd)
    vector_dim: int = 256  # per scalar: vector = 3 * vector_dim = the UNet's adm_in_channels

    @classmethod
    def svd(cls, clip_pretrained: str | None = None) -> "ConditionerConfig":
        return cls(clip_pretrained=clip_pretrained)

    def to_dict(self) -> dict:
        return {**asdict(self), "vae": self.vae.to_dict()}

    @classmethod
    def from_dict(cls, d: dict) -> "ConditionerConfig":
        d = dict(d)
        if "vae" in d:
            d["vae"] = VAEConfig.from_dict(d["vae"])
        return cls(**d)


class Conditioner(nn.Module):
    """Builds SVD's cond / uncond dicts from a conditioning image and the micro-conditioning ids."""

    def __init__(self, cfg: ConditionerConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or ConditionerConfig.svd()
        self.embedders = nn.ModuleList([
            ImageEmbedder(cfg.clip_arch, cfg.clip_pretrained),
            ScalarEmbedder("fps_id", cfg.vector_dim),
            ScalarEmbedder("motion_bucket_id", cfg.vector_dim),
            CondFrameEncoder(cfg.vae),
            ScalarEmbedder("cond_aug", cfg.vector_dim),
        ])

    @property
    def image_embedder(self) -> ImageEmbedder:
        return self.embedders[0]

    @property
    def frame_encoder(self) -> CondFrameEncoder:
        return self.embedders[3]

    def vector(self, batch: int, fps_id, motion_bucket_id, cond_aug, device=None) -> torch.Tensor:
        """(B, 3*dim) float32: embedders 1, 2 and 4 in the official order fps, motion, cond_aug."""
        values = {"fps_id": fps_id, "motion_bucket_id": motion_bucket_id, "cond_aug": cond_aug}
        parts = []
        for embedder in (self.embedders[1], self.embedders[2], self.embedders[4]):
            value = torch.as_tensor(values[embedder.key], dtype=torch.float32, device=device)
            parts.append(embedder(value.reshape(-1).expand(batch)))
        return torch.cat(parts, dim=1)

    def forward(self, image: torch.Tensor, fps_id, motion_bucket_id, cond_aug, *,
                noise: torch.Tensor | None = None, generator: torch.Generator | None = None
                ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """image (B, 3, H, W) in [-1, 1] -> (cond, uncond), one entry per video.

        crossattn (B, 1, D): CLIP embedding of the clean image; vector (B, 3*dim); concat
        (B, z, H/8, W/8): posterior mode of image + cond_aug * noise, NOT scaled by 0.18215.
        The noise is `noise` or drawn from `generator` on the generator's device. The
        unconditional branch zeroes crossattn and concat and keeps vector.
        """
        b = image.shape[0]
        if noise is None:
            where = generator.device if generator is not None else image.device
            noise = torch.randn(image.shape, generator=generator, device=where)
        aug = torch.as_tensor(cond_aug, dtype=torch.float32, device=image.device).reshape(-1).expand(b)
        noisy = image + (aug.view(b, 1, 1, 1) * noise.to(image.device)).to(image.dtype)
        cond = {
            "crossattn": self.image_embedder(image),
            "vector": self.vector(b, fps_id, motion_bucket_id, aug, image.device).to(image.dtype),
            "concat": self.frame_encoder(noisy),
        }
        uncond = {
            "crossattn": torch.zeros_like(cond["crossattn"]),
            "vector": cond["vector"],
            "concat": torch.zeros_like(cond["concat"]),
        }
        return cond, uncond


def repeat_over_frames(cond: dict[str, torch.Tensor], num_frames: int) -> dict[str, torch.Tensor]:
    """Per-video conditioning (B, ...) -> per-frame (B*T, ...), video-major, as the UNet takes it."""
    return {k: v.repeat_interleave(num_frames, dim=0) for k, v in cond.items()}
