"""The decoder temporal finetune (Blattmann et al. 2023, Sec. 3.1.1): the image autoencoder's
decoder, given temporal layers and trained on video so that it stops flickering, with the
encoder frozen so that every latent the diffusion models were trained on stays valid.

Layout: SVD's temporal decoder (`VideoAutoencoder`: a `time_stack` 3-D residual block and a
`mix_factor` after every decoder ResnetBlock, a `time_mix_conv` after `conv_out`), so the result
loads wherever SVD's `first_stage_model` loads. An SD 2.1 (image) VAE is inflated into it
exactly (`inflate_image_vae`).

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
        with torch.no_grad():
            mean, logvar = self.vae.encode_moments(frames).chunk(2, dim=1)
            z = mean + torch.exp(0.5 * logvar.clamp(-30.0, 20.0)) * posterior_noise.to(mean)
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
def inflate_image_vae(image_state: dict[str, torch.Tensor], cfg) -> dict[str, torch.Tensor]:
    """An SD image VAE's state (with quant_conv / post_quant_conv) -> a VideoAutoencoder state.

    quant_conv (1x1) is folded into encoder.conv_out exactly: W' = W_q W_e, b' = W_q b_e + b_q.
    post_quant_conv (1x1) is folded into decoder.conv_in: W' = W_c W_pq, b' = b_c + sum W_c b_pq,
    exact except on the latent's one-pixel border, where conv_in's zero padding used to see
    post_quant_conv(0) = b_pq and now sees 0. The temporal layers start as identities:
    time_stack's last conv zero (x + 0), mix_factor 0 (then 0.5 x + 0.5 x), time_mix_conv the
    centre tap of an identity.
    """
    from svdcli.models.vae import VideoAutoencoder

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
    from safetensors.torch import load_file

    from svdcli.families.svd.formats import load_checkpoint
    from svdcli.models.vae import VideoAutoencoder

    ckpt = load_checkpoint(path)
    state = ckpt.parts.get("vae")
    if not state or ckpt.vae_config is None:
        raise SvdError(f"--init {path} holds no VAE weights (parts: {', '.join(ckpt.parts) or 'none'})")
    if "quant_conv.weight" in state:
        state = inflate_image_vae(state, ckpt.vae_config)
    vae = VideoAutoencoder(ckpt.vae_config)
    missing, unexpected = vae.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise SvdError(f"--init {path}: its VAE does not fit SVD's temporal decoder "
                       f"({len(missing)} missing, e.g. {missing[:1]}; {len(unexpected)} unexpected, e.g. {unexpected[:1]})")
    disc = None
    if ckpt.kind == "ours" and any(k.startswith("discriminator.") for k in ckpt.unexpected):
        disc = {k[len("discriminator."):]: v for k, v in load_file(str(path)).items() if k.startswith("discriminator.")}
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
