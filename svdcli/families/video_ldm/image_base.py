"""The frozen image model a Video LDM is built over, and what it was trained with: its network
layout, its parameterisation (what it predicts, on which noise schedule), its unconditional
text branch, and its frozen VAE and text tower.

Blattmann et al. 2023, Sec. 3.1: the temporal layers train "with the same noise schedule as the
underlying image model", so the video model trains and samples in the image model's own terms:

| layout   | `model:`                       | prediction | schedule (discrete VP, T = 1000)     | uncond text |
|----------|--------------------------------|------------|--------------------------------------|-------------|
| svd      | tiny, svd (our image stage)    | edm        | EDM log-normal / Karras (SVD's)      | zeros       |
| sd       | tiny_sd21, sd21 (SD 2.x)       | v or eps   | scaled-linear betas 0.00085..0.012   | embed("")   |
| upscaler | tiny_x4_upscaler, x4_upscaler  | v          | scaled-linear betas 0.0001..0.02     | embed("")   |

(ldm's "linear" beta schedule is diffusers' "scaled_linear": sqrt(beta) is linear.) An SD
model's unconditional branch is the empty prompt's embedding, as SD 2.x trains and samples it;
ours was trained with the text embedding zeroed (`cond.dropout`). This module imports no torch
at module level.
"""
from __future__ import annotations

from pathlib import Path

from svdcli.errors import MissingWeightsError, SvdError

LAYOUTS = {"tiny": "svd", "svd": "svd", "tiny_sd21": "sd", "sd21": "sd",
           "tiny_x4_upscaler": "upscaler", "x4_upscaler": "upscaler"}
BETAS = {"sd": (0.00085, 0.012), "upscaler": (0.0001, 0.02)}
UPSCALER_LATENT_SCALE = 0.08333   # the x4 upscaler's VAE scale_factor (x4-upscaling.yaml)
WEIGHTS_HELP = {
    "svd": "the official SVD file (svd.safetensors from huggingface.co/stabilityai/stable-video-diffusion-img2vid), "
           "whose VAE our image stage trained with",
    "sd": "the SD 2.x file the UNet comes from (e.g. v2-1_768-ema-pruned.safetensors from "
          "huggingface.co/stabilityai/stable-diffusion-2-1): its first_stage_model is the VAE",
    "upscaler": "the x4 upscaler file (x4-upscaler-ema.safetensors from "
                "huggingface.co/stabilityai/stable-diffusion-x4-upscaler): its first_stage_model is the VAE",
}


def layout(own) -> str:
    """svd | sd | upscaler: which image model the `model:` preset is."""
    return LAYOUTS[own.model]


def resolved_prediction(own) -> str:
    """The image model's parameterisation: `prediction`, or for auto, edm (ours) or v (SD 2.x)."""
    if own.prediction != "auto":
        return own.prediction
    return "edm" if layout(own) == "svd" else "v"


def is_sd(own) -> bool:
    """An SD 2.x image model (discrete VP schedule, the empty prompt as its unconditional text)."""
    return layout(own) != "svd"


def network_config(own):
    """The video UNet of a `model:` preset: the image model's spatial layout + SVD's temporal layers."""
    from svdcli.models.config import UNetConfig

    sd = dict(in_channels=4, adm_in_channels=None)
    upscaler = dict(in_channels=7, out_channels=4, num_res_blocks=2, attention_resolutions=(2, 4, 8),
                    adm_in_channels=None, num_classes=1000, disable_self_attentions=(True, True, True, False))
    return {
        "tiny": lambda: UNetConfig.tiny(),
        "svd": lambda: UNetConfig.svd(),
        "tiny_sd21": lambda: UNetConfig.tiny(**sd),
        "sd21": lambda: UNetConfig(**sd),                      # SD 2.x: 320 channels x (1, 2, 4, 4), 64-wide heads
        "tiny_x4_upscaler": lambda: UNetConfig.tiny(**upscaler, num_heads=2),
        "x4_upscaler": lambda: UNetConfig(**upscaler, model_channels=256, channel_mult=(1, 2, 2, 4), num_heads=8),
    }[own.model]()


def schedule(own):
    """The discrete VP schedule an SD image model was trained on (None for ours: EDM)."""
    from svdcli.diffusion.schedules import DiscreteVPSchedule

    if not is_sd(own):
        return None
    start, end = BETAS[layout(own)]
    return DiscreteVPSchedule.scaled_linear(start, end)


def scaling(own):
    """D's preconditioning in the image model's parameterisation (svdcli.diffusion.scalings)."""
    from svdcli.diffusion.scalings import for_prediction

    return for_prediction(resolved_prediction(own), schedule(own))


def latent_scale(own) -> float:
    """The factor between VAE latents and the diffusion model's x0 (0.18215 for SD's f8 VAE)."""
    from svdcli.models.vae import SCALE_FACTOR

    return UPSCALER_LATENT_SCALE if layout(own) == "upscaler" else SCALE_FACTOR


def build_encoders(own, seed: int):
    """The frozen VAE and text tower (svdcli.families.svd.encoders.Encoders): seeded tiny ones for
    the tiny presets; else the VAE of the `weights:` file and SD 2.x's OpenCLIP ViT-H-14 text tower."""
    from svdcli.families.svd.encoders import Encoders, tiny_encoders

    cfg = network_config(own)
    if own.model.startswith("tiny"):
        enc = tiny_encoders(cfg, seed)
        if layout(own) == "upscaler":                            # the x4 upscaler's VAE downsamples by 4
            from svdcli.models.vae import VAEConfig, VideoAutoencoder

            enc.vae = VideoAutoencoder(VAEConfig(ch=32, ch_mult=(1, 1, 2)))
        return Encoders(vae=enc.vae, encode_cond_frame=None, embed_image=None, embed_text=enc.embed_text,
                        context_dim=cfg.context_dim, adm_in_channels=cfg.adm_in_channels)
    if not own.weights or not Path(own.weights).is_file():
        raise MissingWeightsError(f"model {own.model} needs `weights:` {WEIGHTS_HELP[layout(own)]} "
                                  f"(not found: {own.weights or 'not set'})")
    from svdcli.families.svd.encoders import file_vae, sd_text_tower

    return Encoders(vae=file_vae(Path(own.weights), "weights:"), encode_cond_frame=None, embed_image=None,
                    embed_text=sd_text_tower() if own.cond.mode == "t2v" else None,
                    context_dim=cfg.context_dim, adm_in_channels=cfg.adm_in_channels)


def check_init_kind(own, path: Path, kind: str) -> None:
    """Refuse an `--init` image model of another kind than `model:` names (an SD file into our
    layout, or our EDM export into an SD layout): its layers would run in the wrong parameterisation."""
    if kind == "sd21" and not is_sd(own):
        raise SvdError(f"--init {path} is an SD 2.x file: set model: sd21 (tiny_sd21 for a tiny file; "
                       "x4_upscaler for the x4 upscaler) with prediction: v (768-v files) or eps (512 base files)")
    if kind != "sd21" and is_sd(own):
        raise SvdError(f"--init {path} is a {kind} checkpoint of our EDM-trained network, not an SD 2.x file: "
                       f"model {own.model} is SD's layout; Video LDM over our image stage uses model: svd (or tiny)")
