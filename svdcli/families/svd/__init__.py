"""Stable Video Diffusion (Blattmann et al. 2023): the video UNet in latent space, EDM training
with v-scaling, image (or text) conditioning with micro-conditioning on fps, motion and noise.

    config.py           the family's training-config keys (`model`, `weights`, `freeze_spatial`, `cond`)
    network.py          the denoiser for a training stage, `--init`, which layers train
    encoders.py         frozen VAE and CLIP towers (tiny seeded ones or an official file's)
    batch.py            loader batch -> (x0, cond) with condition dropout
    checkpoint.py, formats.py, inflate.py, diffusers_folder.py, *_diffusers.py
                        checkpoint formats (official sgm, ours, diffusers, SD 2.1), at the edge
    loading.py, presets.py, sampling_conditioning.py, sampling.py
                        what sampling loads, its defaults, conditioning and decoding
    multiview.py        SVD-MV: the elevation in the vector conditioning (stage multiview)
    tiny.py             a tiny random checkpoint for tests and trying the CLI
Nothing here is imported before a command needs it; this module imports no torch.
"""
from __future__ import annotations

from pathlib import Path

from svdcli.families.base import CheckpointHeader, Family, TrainBatch
from svdcli.families.svd.config import SVDConfig

OUR_FORMATS = ("svdcli", "svdcli-unet")  # `format` metadata of our files (save_ours; the first exports)
OFFICIAL_KEY_PREFIXES = ("model.diffusion_model.", "first_stage_model.", "conditioner.")


class SVDFamily(Family):
    name = "svd"
    stages = ("image", "video", "finetune", "multiview")
    config_type = SVDConfig

    def validate(self, cfg) -> None:
        from svdcli.families.svd.config import validate

        validate(cfg)

    # --- training ------------------------------------------------------------------------
    def build(self, cfg, init: Path | None = None):
        from svdcli.families.svd.network import build_denoiser

        return build_denoiser(cfg, init)

    def encoders(self, cfg, device: str):
        from svdcli.families.svd.encoders import build_encoders

        return build_encoders(cfg.family_config, cfg.seed, structure_only=device == "meta").to(device)

    def training_vae(self, encoders):
        return encoders.vae

    def prepare(self, video, meta, encoders, cfg, gen, device) -> TrainBatch:
        from svdcli.families.svd.batch import prepare_batch

        return prepare_batch(video, meta, encoders, cfg, gen, device)

    # --- checkpoints ---------------------------------------------------------------------
    def save(self, path: Path, state, cfg, metadata: dict[str, str]) -> None:
        """Our format (`unet.*` tensors, the UNet config in the metadata), which `svd sample`,
        `svd convert` and `--init` read; the denoiser's `net.` is the UNet."""
        from svdcli.families.svd.config import unet_config
        from svdcli.families.svd.formats import save_ours

        unet = {k[len("net."):]: v for k, v in state.items() if k.startswith("net.")}
        save_ours(path, {"unet": unet}, unet_config=unet_config(cfg.family_config.model, cfg.stage),
                  extra_metadata=metadata)

    def saved_state(self, path: Path):
        from safetensors.torch import load_file

        return {"net." + k[len("unet."):]: v for k, v in load_file(str(path)).items() if k.startswith("unet.")}

    def claims(self, header: CheckpointHeader) -> bool:
        """Our files, official sgm files, SD 2.1 files, diffusers folders."""
        path = header.path
        if path.is_dir():
            return (path / "unet" / "config.json").exists() or (path / "vae" / "config.json").exists()
        if path.suffix == ".ckpt" or header.metadata.get("format") in OUR_FORMATS:
            return True
        return any(k.startswith(OFFICIAL_KEY_PREFIXES) for k in header.keys)

    def load(self, header: CheckpointHeader):
        from svdcli.families.svd.loading import load

        return load(self, header)

    def pack_vae(self, source: str):
        from svdcli.families.svd.encoders import pack_vae

        return pack_vae(source)

    # --- sampling ------------------------------------------------------------------------
    option_names = ("fps_id", "motion_bucket_id", "cond_aug", "prompt", "decode_chunk", "model",
                    "temporal_prompt", "lora", "elevation")

    def sampling_defaults(self, model, options: dict):
        from svdcli.families.svd.sampling import sampling_defaults

        return sampling_defaults(model, options)

    def resolve_options(self, model, options: dict, image, warn) -> dict:
        from svdcli.families.svd.sampling import resolve_options

        self.check_option_names(options)
        return resolve_options(model, options, image, warn)

    def sampling_inputs(self, model, image, opts, device, dtype):
        from svdcli.families.svd.sampling import sampling_inputs

        return sampling_inputs(model, image, opts, device, dtype)

    def guided_denoiser(self, model, opts, autocast_dtype):
        from svdcli.families.svd.lora import set_loras
        from svdcli.families.svd.sampling import guided_video_denoiser

        set_loras(model, opts.family_options["lora"])  # exactly these (none: the base model)
        return guided_video_denoiser(model.unet, opts.frames, min_cfg=opts.min_cfg, max_cfg=opts.max_cfg,
                                     autocast_dtype=autocast_dtype)

    def decode(self, model, x, opts):
        from svdcli.families.svd.sampling import decode_latents

        return decode_latents(model.vae, x, opts.frames, opts.family_options["decode_chunk"])
