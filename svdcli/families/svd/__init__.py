"""Stable Video Diffusion (Blattmann et al. 2023): the video UNet in latent space, EDM training
with v-scaling, image (or text) conditioning with micro-conditioning on fps, motion and noise.

    config.py           the family's training-config keys (`model`, `weights`, `freeze_spatial`,
                        `cond`) and its sampling options (`SVDOptions`)
    training.py         its training methods: build, encoders, prepare, save, --latents VAEs
    network.py          the denoiser for a training stage, `--init`, which layers train
    encoders.py         frozen VAE and CLIP towers (tiny seeded ones or an official file's)
    batch.py            loader batch -> (x0, cond) with condition dropout
    checkpoint.py, formats.py, inflate.py, diffusers_folder.py, *_diffusers.py
                        checkpoint formats (official sgm, ours, diffusers, SD 2.1), at the edge
    sampling.py         its sampling methods: load, options, inputs, guidance, decoding;
    loading.py, presets.py, sampling_conditioning.py
                        what sampling loads from each format, its defaults, conditioning
    multiview.py        SVD-MV: the elevation in the vector conditioning (stage multiview)
    tiny.py             a tiny random checkpoint for tests and trying the CLI
Nothing here is imported before a command needs it; this module imports no torch.
"""
from __future__ import annotations

from svdcli.families.base import CheckpointHeader, Family
from svdcli.families.svd.config import SVDConfig, SVDOptions

OUR_FORMATS = ("svdcli", "svdcli-unet")  # `format` metadata of our files (save_ours; the first exports)
OFFICIAL_KEY_PREFIXES = ("model.diffusion_model.", "first_stage_model.", "conditioner.")


class SVDFamily(Family):
    """config.py, training.py and sampling.py hold its methods (svdcli.families.base)."""

    name = "svd"
    stages = ("image", "video", "finetune", "multiview")
    config_type = SVDConfig
    Options = SVDOptions

    def claims(self, header: CheckpointHeader) -> bool:
        """Our files, official sgm files, SD 2.1 files, diffusers folders."""
        path = header.path
        if path.is_dir():
            return (path / "unet" / "config.json").exists() or (path / "vae" / "config.json").exists()
        if path.suffix == ".ckpt" or header.metadata.get("format") in OUR_FORMATS:
            return True
        return any(k.startswith(OFFICIAL_KEY_PREFIXES) for k in header.keys)
