"""The first-stage autoencoder: SD f8 encoder and SVD's temporal video decoder.

`VideoAutoencoder` has the official `first_stage_model` layout (no quant_conv), so an official
checkpoint loads by stripping the `first_stage_model.` prefix. `ImageAutoencoder` is the plain
SD VAE with quant_conv/post_quant_conv: SD 2.1's VAE, the one SVD's conditioner uses to encode
the conditioning frame, and the `first_stage_model` of the "image decoder" checkpoint variant.
Both share one encode/decode API. Diffusion latents are VAE latents times `SCALE_FACTOR`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import torch
from torch import nn

from svdcli.errors import SvdError
from svdcli.models.vae_blocks import Decoder, Encoder
from svdcli.models.vae_diffusers import vae_state_from_diffusers, vae_state_to_diffusers

SCALE_FACTOR = 0.18215  # diffusion latent = SCALE_FACTOR * VAE latent (SD 2.1 / SVD)

__all__ = [
    "SCALE_FACTOR", "VAEConfig", "Autoencoder", "VideoAutoencoder", "ImageAutoencoder", "posterior_sample",
    "inflate_image_vae",
    "vae_state_from_diffusers", "vae_state_to_diffusers",
]


@dataclass
class VAEConfig:
    """Architecture of the f8 autoencoder (sgm `Encoder`/`VideoDecoder` arguments)."""

    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    in_channels: int = 3
    out_ch: int = 3
    z_channels: int = 4
    video_kernel_size: tuple[int, int, int] = (3, 1, 1)

    @classmethod
    def svd(cls) -> "VAEConfig":
        """The SD 2.1 / SVD autoencoder: 97.7M parameters with the temporal decoder (83.7M plain)."""
        return cls()

    @classmethod
    def tiny(cls) -> "VAEConfig":
        """The reference fixture's tiny autoencoder (32/32/32/64 channels), for tests."""
        return cls(ch=32, ch_mult=(1, 1, 1, 2))

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> "VAEConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown VAE config keys: {sorted(unknown)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})

    @property
    def downsampling(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)


def posterior_sample(moments: torch.Tensor, generator: torch.Generator | None = None,
                     eps: torch.Tensor | None = None) -> torch.Tensor:
    """z = mu + exp(logvar/2) * eps, with logvar clamped to [-30, 20] as in the SD VAE; eps
    drawn from `generator` unless given."""
    mean, logvar = moments.chunk(2, dim=1)
    std = torch.exp(0.5 * logvar.clamp(-30.0, 20.0))
    if eps is None:
        where = generator.device if generator is not None else mean.device
        eps = torch.randn(mean.shape, generator=generator, device=where)
    eps = eps.to(mean)
    return mean + std * eps


def _chunks(n: int, size: int | None) -> list[tuple[int, int]]:
    size = size or n or 1
    return [(s, min(s + size, n)) for s in range(0, n, size)]


class Autoencoder(nn.Module):
    """Shared encode/decode API; subclasses say how moments and frames are computed."""

    cfg: VAEConfig

    def _moments(self, frames: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _decode(self, z: torch.Tensor, num_frames: int) -> torch.Tensor:
        raise NotImplementedError

    def encode_moments(self, frames: torch.Tensor, chunk: int | None = None) -> torch.Tensor:
        """Frames (N, 3, H, W) in [-1, 1] -> moments (N, 2z, H/8, W/8), `chunk` frames a call."""
        return torch.cat([self._moments(frames[s:e]) for s, e in _chunks(len(frames), chunk)])

    def encode(self, frames: torch.Tensor, *, sample: bool = False,
               generator: torch.Generator | None = None, chunk: int | None = None) -> torch.Tensor:
        """Frames (N, 3, H, W) in [-1, 1] -> VAE latents (N, z, H/8, W/8): posterior mode or sample.

        Not scaled: multiply by SCALE_FACTOR for diffusion latents.
        """
        moments = self.encode_moments(frames, chunk)
        if sample:
            return posterior_sample(moments, generator)
        return moments[:, : self.cfg.z_channels]

    def decode(self, z: torch.Tensor, num_frames: int = 1, chunk: int | None = None) -> torch.Tensor:
        """VAE latents (B*T, z, h, w), video-major -> frames (B*T, 3, 8h, 8w), about [-1, 1].

        With `chunk`, each video is decoded `chunk` frames at a time and each piece sees only
        its own frames (timesteps = piece length), as sgm's `decode_first_stage`: temporal
        zero padding at the piece edges makes the result depend on the chunk size. Pieces never
        span two videos. Not scaled: divide diffusion latents by SCALE_FACTOR first.
        """
        n = z.shape[0]
        if num_frames < 1 or n % num_frames:
            raise ValueError(f"{n} latent frames are not a whole number of {num_frames}-frame videos")
        if not chunk or chunk >= num_frames:
            return self._decode(z, num_frames)
        out = []
        for start in range(0, n, num_frames):
            for s, e in _chunks(num_frames, chunk):
                out.append(self._decode(z[start + s : start + e], e - s))
        return torch.cat(out)

    def decode_diffusion_latents(self, x: torch.Tensor, num_frames: int = 1,
                                 chunk: int | None = None) -> torch.Tensor:
        """Diffusion latents (B*T, z, h, w) -> frames: decode(x / SCALE_FACTOR)."""
        return self.decode(x / SCALE_FACTOR, num_frames, chunk)


class VideoAutoencoder(Autoencoder):
    """SD f8 encoder (frames independently) + temporal decoder (frames of one video together).

    The official `first_stage_model` of SVD / SVD-XT: no quant_conv / post_quant_conv.
    """

    def __init__(self, cfg: VAEConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or VAEConfig.svd()
        self.encoder = Encoder(cfg.ch, cfg.ch_mult, cfg.num_res_blocks, cfg.in_channels, cfg.z_channels)
        self.decoder = Decoder(cfg.ch, cfg.ch_mult, cfg.num_res_blocks, cfg.out_ch, cfg.z_channels,
                               temporal=True, video_kernel_size=cfg.video_kernel_size)

    def _moments(self, frames: torch.Tensor) -> torch.Tensor:
        return self.encoder(frames)

    def _decode(self, z: torch.Tensor, num_frames: int) -> torch.Tensor:
        return self.decoder(z, num_frames=num_frames)


class ImageAutoencoder(Autoencoder):
    """Plain SD VAE with quant_conv/post_quant_conv; frames decode independently.

    SD 2.1's VAE, SVD's conditioning-frame encoder (sgm `AutoencoderKLModeOnly`) and the
    `first_stage_model` of the SVD "image decoder" checkpoint variant.
    """

    def __init__(self, cfg: VAEConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or VAEConfig.svd()
        z2 = 2 * cfg.z_channels
        self.encoder = Encoder(cfg.ch, cfg.ch_mult, cfg.num_res_blocks, cfg.in_channels, cfg.z_channels)
        self.decoder = Decoder(cfg.ch, cfg.ch_mult, cfg.num_res_blocks, cfg.out_ch, cfg.z_channels,
                               temporal=False)
        self.quant_conv = nn.Conv2d(z2, z2, 1)
        self.post_quant_conv = nn.Conv2d(cfg.z_channels, cfg.z_channels, 1)

    def _moments(self, frames: torch.Tensor) -> torch.Tensor:
        return self.quant_conv(self.encoder(frames))

    def _decode(self, z: torch.Tensor, num_frames: int) -> torch.Tensor:
        return self.decoder(self.post_quant_conv(z))


def inflate_image_vae(image_state: dict[str, torch.Tensor], cfg) -> dict[str, torch.Tensor]:
    """An SD image VAE's state (with quant_conv / post_quant_conv) -> a VideoAutoencoder state.

    quant_conv (1x1) is folded into encoder.conv_out exactly: W' = W_q W_e, b' = W_q b_e + b_q.
    post_quant_conv (1x1) is folded into decoder.conv_in: W' = W_c W_pq, b' = b_c + sum W_c b_pq,
    exact except on the latent's one-pixel border, where conv_in's zero padding used to see
    post_quant_conv(0) = b_pq and now sees 0. The temporal layers start as identities:
    time_stack's last conv zero (x + 0), mix_factor 0 (then 0.5 x + 0.5 x), time_mix_conv the
    centre tap of an identity.
    """
    s = {k: v.float() for k, v in image_state.items()}
    wq, bq = s.pop("quant_conv.weight")[:, :, 0, 0], s.pop("quant_conv.bias")
    we, be = s["encoder.conv_out.weight"], s["encoder.conv_out.bias"]
    s["encoder.conv_out.weight"] = torch.einsum("oi,ichw->ochw", wq, we)
    s["encoder.conv_out.bias"] = wq @ be + bq
    wpq, bpq = s.pop("post_quant_conv.weight")[:, :, 0, 0], s.pop("post_quant_conv.bias")
    wc, bc = s["decoder.conv_in.weight"], s["decoder.conv_in.bias"]
    s["decoder.conv_in.weight"] = torch.einsum("oihw,ij->ojhw", wc, wpq)
    s["decoder.conv_in.bias"] = bc + torch.einsum("oihw,i->o", wc, bpq)
    out = VideoAutoencoder(cfg).state_dict()
    for key, value in out.items():
        if key in s:
            value.copy_(s.pop(key))
        elif ".time_stack.out_layers.3." in key or key.endswith(".mix_factor"):
            value.zero_()
        elif ".time_mix_conv.weight" in key:
            value.zero_()
            idx = torch.arange(value.shape[0])
            value[idx, idx, value.shape[2] // 2, value.shape[3] // 2, value.shape[4] // 2] = 1.0
        elif ".time_mix_conv.bias" in key:
            value.zero_()
    if s:
        raise SvdError(f"the image VAE has {len(s)} weights the video decoder has no place for (e.g. {next(iter(s))})")
    return out
