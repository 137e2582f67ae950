"""Video LDM's training methods (svdcli.families.base.Family), per stage: the temporal layers over
the frozen image model (video, predict, interpolate, upsample) in its own parameterisation, and
the decoder finetune (decoder), which is not a diffusion model and brings its own loss."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from svdcli.families.video_ldm import batch, image_base


def build(family, cfg, init: Path | None = None):
    if cfg.stage == "decoder":
        from svdcli.families.video_ldm.decoder import build_decoder_finetune

        return build_decoder_finetune(cfg, init)
    from svdcli.families.video_ldm.network import build_denoiser

    return build_denoiser(cfg, init)


def encoders(family, cfg, device: str):
    if cfg.stage == "decoder":
        return None
    return image_base.build_encoders(cfg.family_config, cfg.seed).to(device)


def training_vae(family, encoders):
    return encoders.vae


def prepare(family, video, meta, encoders, cfg, gen, device):
    if cfg.stage == "decoder":
        return batch.prepare_decoder_batch(video, cfg, gen, device)
    if cfg.stage == "upsample":
        from svdcli.families.video_ldm.upsample import prepare_batch as prepare_upsample

        return prepare_upsample(video, meta, encoders, cfg, gen, device)
    return batch.prepare_batch(video, meta, encoders, cfg, gen, device)


def training_sigmas(family, n: int, cfg, gen):
    """The image model's training noise levels: SD's uniform timesteps, or EDM's log-normal."""
    if cfg.stage == "decoder":  # no diffusion: the decoder reconstructs clean frames
        return torch.zeros(n)
    from svdcli.diffusion.edm import sample_sigmas_lognormal

    sched = image_base.schedule(cfg.family_config)
    if sched is None:
        return sample_sigmas_lognormal(n, cfg.noise.p_mean, cfg.noise.p_std, generator=gen)
    return sched.sample_sigmas(n, gen)


def loss(family, denoiser, batch, sigma, noise):
    """The image model's own objective (eps- or v-MSE for SD, EDM eq. 8 for ours) on every frame,
    the denoiser's; the decoder finetune's reconstruction, perceptual and adversarial terms."""
    if "posterior_noise" in batch.cond:
        return denoiser(batch.x0, batch.cond["posterior_noise"], batch.frames, batch.step)
    return denoiser(batch.x0, sigma, batch.cond, batch.frames, batch.image_only_indicator, loss_noise=noise)


def save(family, path: Path, state, cfg, metadata: dict[str, str]) -> None:
    """The denoiser's state as it is (`net.unet.*`, `net.context_convs.*`) with `metadata` and the
    resolved UNet config (`unet_config`, which loading rebuilds the network from); a decoder
    export is our SVD format (`vae.*`, loadable where SVD's VAE loads) plus `discriminator.*`,
    the frozen LPIPS network left out."""
    from safetensors.torch import save_file

    if cfg.stage == "decoder":
        from svdcli.families.svd.formats import FORMAT_TAG, FORMAT_VERSION
        from svdcli.families.video_ldm.decoder import decoder_vae_config

        kept = {k: v.contiguous() for k, v in state.items() if k.startswith(("vae.", "discriminator."))}
        save_file(kept, str(path), metadata={**metadata, "format": FORMAT_TAG, "format_version": FORMAT_VERSION,
                                             "vae_config": decoder_vae_config(kept)})
        return
    unet = json.dumps(image_base.network_config(cfg.family_config).to_dict())
    save_file({k: v.contiguous() for k, v in state.items()}, str(path),
              metadata={**metadata, "format": "svdcli-video-ldm", "unet_config": unet})


def pack_vae(family, source: str):
    """A `--stage decoder` run folder means its newest export (the finetuned decoder); a run over
    a tiny image model, the tiny VAE it trained with (`tiny:SEED`); anything else as SVD reads it."""
    from svdcli import runs
    from svdcli.families.svd.encoders import pack_vae as svd_pack_vae

    path = Path(source)
    if path.is_dir() and runs.config_file(path).is_file():
        values = runs.read_config(path)
        if values.get("stage") == "decoder":
            source = str(runs.resolve_checkpoint(path))
        elif str(values.get("model", "")).startswith("tiny") and values.get("model") != "tiny_x4_upscaler":
            source = f"tiny:{int(values.get('seed', 0))}"
    return svd_pack_vae(source)
