"""The decoder temporal finetune (Blattmann et al. 2023, Sec. 3.1.1): the image autoencoder's
decoder, given temporal layers and trained on video so that it stops flickering, with the
encoder frozen so that every latent the diffusion models were trained on stays valid.

Layout: SVD's temporal decoder (`VideoAutoencoder`: a `time_stack` 3-D residual block and a
`mix_factor` after every decoder ResnetBlock, a `time_mix_conv` after `conv_out`), so the result
loads wherever SVD's `first_stage_model` loads. An SD 2.1 (image) VAE is inflated into it
(svdcli.models.vae.inflate_image_vae).

Loss per video (the LDM autoencoder's `LPIPSWithDiscriminator`, the encoder's KL term dropped
since the encoder does not train, its learned log-variance held at 0):

    L = mean |x - x_hat| + w_p LPIPS(x, x_hat) + lambda * L_G + L_D        (after disc_start)
    L_G = -mean D(x_hat),   L_D = hinge(D(x), D(x_hat)),
    lambda = disc_weight * ||grad L_rec|| / (||grad L_G|| + 1e-4) at the decoder's last layer

with D the patch-wise temporal discriminator of 3-D convolutions (discriminator.py). L_G
reaches the decoder only and L_D the discriminator only, so one optimizer trains both.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from svdcli.errors import MissingWeightsError, SvdError
from svdcli.families.video_ldm.config import DecoderConfig
from svdcli.families.video_ldm.discriminator import (TemporalPatchDiscriminator, adaptive_weight,
                                                     discriminator_accuracy, frozen_call, hinge_d_loss)
from svdcli.models.vae_blocks import to_video

TEMPORAL_KEYS = (".time_stack.", ".mix_factor", ".time_mix_conv.")


def is_decoder_temporal(name: str) -> bool:
    """A VideoAutoencoder parameter the image VAE does not have."""
    return any(key in name for key in TEMPORAL_KEYS)


class DecoderFinetune(nn.Module):
    """forward(frames, posterior_noise, num_frames, step) -> loss per video (B,).

    frames (B*T, 3, H, W) in [-1, 1], video-major; posterior_noise (B*T, z, H/8, W/8) is the
    eps of z = mu + sigma * eps (zeros: the posterior mode). `stats` holds the last call's terms.
    """

    def __init__(self, vae: nn.Module, own: DecoderConfig):
        super().__init__()
        from svdcli.models.perceptual import lpips_vgg

        self.vae = vae
        self.discriminator = TemporalPatchDiscriminator(own.disc_channels, own.disc_layers)
        self.perceptual = lpips_vgg(own.lpips_backbone) if own.perceptual_weight > 0 else None
        self.own = own
        vae.encoder.requires_grad_(False)
        for name, p in vae.decoder.named_parameters():
            p.requires_grad_(own.train_spatial or is_decoder_temporal("." + name))
        self.stats: dict[str, float] = {}

    def reconstruct(self, frames: torch.Tensor, posterior_noise: torch.Tensor, num_frames: int) -> torch.Tensor:
        """x_hat = decoder(mu + sigma * eps), the encoder run without gradients."""
        from svdcli.models.vae import posterior_sample

        with torch.no_grad():
            z = posterior_sample(self.vae.encode_moments(frames), eps=posterior_noise)
        return self.vae.decode(z, num_frames)

    def forward(self, frames: torch.Tensor, posterior_noise: torch.Tensor, num_frames: int, step: int):
        recon = self.reconstruct(frames, posterior_noise, num_frames)
        b = frames.shape[0] // num_frames
        rec = (frames.float() - recon.float()).abs().flatten(1).mean(1)                  # (B*T,)
        if self.perceptual is not None:
            from svdcli.models.perceptual import perceptual_distance

            rec = rec + self.own.perceptual_weight * perceptual_distance(self.perceptual, frames, recon)
        nll = rec.reshape(b, num_frames).mean(1)                                          # (B,)
        self.stats = {"nll": float(nll.detach().mean())}
        if step < self.own.disc_start:
            return nll
        real, fake = to_video(frames, num_frames), to_video(recon, num_frames)            # (B, 3, T, H, W)
        g_loss = -frozen_call(self.discriminator, fake).float().mean()
        weight = self.own.disc_weight
        if torch.is_grad_enabled():
            weight = weight * adaptive_weight(nll.mean(), g_loss, self._last_layer())
        logits_real = self.discriminator(real.detach())
        logits_fake = self.discriminator(fake.detach())
        d_loss = hinge_d_loss(logits_real.float(), logits_fake.float())
        self.stats.update(g_loss=float(g_loss.detach()), d_loss=float(d_loss.detach()), adaptive_weight=float(weight),
                          d_accuracy=float(discriminator_accuracy(logits_real, logits_fake)))
        return nll + weight * g_loss + d_loss

    def _last_layer(self) -> torch.Tensor:
        weight = self.vae.decoder.conv_out.time_mix_conv.weight
        if weight.numel() == 0:
            raise SvdError("the decoder finetune's adaptive weight needs the decoder's last layer whole: "
                           "train it with ZeRO stage 0, 1 or 2 (not 3)")
        return weight


# --- initial weights ---------------------------------------------------------------------------
def initial_vae(cfg, init: Path | None):
    """The VideoAutoencoder the finetune starts from, and the discriminator state of a previous
    decoder export (or None). `--init`: an SD 2.1 file (inflated), an official SVD file or our
    file with a VAE, or a previous `--stage decoder` export. Without it: model tiny's seeded
    VAE (the one `svd pack --latents tiny:SEED` and tiny runs use), or model svd's `weights:`."""
    from svdcli import runs
    from svdcli.families.svd.config import unet_config
    from svdcli.families.svd.encoders import SVD_FILE_HELP, tiny_encoders

    own = cfg.family_config
    if init is None and own.model == "tiny":
        return tiny_encoders(unet_config("tiny"), cfg.seed).vae, None
    source = init if init is not None else (Path(own.weights) if own.weights else None)
    if source is None or not Path(source).exists():
        raise MissingWeightsError(f"the decoder finetune of model {own.model} starts from a VAE: pass --init "
                                  f"(SD 2.1 file, official SVD file or a decoder export) or set weights: to "
                                  f"{SVD_FILE_HELP} (not found: {source or 'not set'})")
    return _file_vae(runs.resolve_checkpoint(Path(source)))


def _file_vae(path: Path):
    from safetensors import safe_open

    from svdcli.families.base import read_header
    from svdcli.families.svd.encoders import file_vae

    vae = file_vae(path, "--init")
    keys = [k for k in read_header(path).keys if k.startswith("discriminator.")]
    disc = None
    if keys:  # a previous decoder export: its discriminator continues too
        with safe_open(str(path), framework="pt") as f:
            disc = {k[len("discriminator."):]: f.get_tensor(k) for k in keys}
    return vae, disc


def build_decoder_finetune(cfg, init: Path | None = None) -> DecoderFinetune:
    torch.manual_seed(cfg.seed)
    vae, disc_state = initial_vae(cfg, init)
    module = DecoderFinetune(vae, cfg.family_config.decoder)
    if disc_state is not None:
        module.discriminator.load_state_dict(disc_state, strict=True)
    return module


def flicker(decoded: torch.Tensor, source: torch.Tensor, num_frames: int) -> float:
    """mean |x_hat_{t+1} - x_hat_t| - mean |x_{t+1} - x_t| over videos (B*T, 3, H, W): the
    temporal variation the decoder adds beyond the source's own motion."""
    def variation(x):
        v = to_video(x.float(), num_frames)
        return (v[:, :, 1:] - v[:, :, :-1]).abs().mean()

    return float(variation(decoded) - variation(source))


def decoder_vae_config(state: dict[str, torch.Tensor]) -> str:
    """The VAEConfig (JSON, our format's `vae_config` metadata) of an export's `vae.*` tensors."""
    import json

    from svdcli.families.svd.checkpoint import infer_vae_config

    return json.dumps(infer_vae_config({k[len("vae."):]: v for k, v in state.items() if k.startswith("vae.")}).to_dict())
