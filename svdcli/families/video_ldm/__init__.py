"""Video LDM, "Align your Latents" (Blattmann, Rombach, Ling, Dockhorn, Kim, Fidler, Kreis;
CVPR 2023, arXiv 2304.08818): temporal layers over a frozen image LDM, a prediction model for
long videos and a temporal interpolation model, both through a binary temporal mask.

    config.py    the family's config keys (SVD's, plus the context frames of Sec. 3.2-3.3)
    network.py   SVD's VideoUNet + the mask conditioning added into the temporal layers
    batch.py     loader batch -> latents, caption embedding, context mask
    sampling.py  one-shot, chunk-after-chunk (--long) and interpolation (--interpolate) loops
    decoder.py   the decoder temporal finetune (`--stage decoder`, Sec. 3.1.1) and its losses;
                 discriminator.py its patch-wise temporal discriminator
The network, encoders and text conditioning are the SVD family's (svdcli.families.svd): this
family differs in which layers train, the mask conditioning and its sampling loops.
This module imports no torch.
"""
from __future__ import annotations

from pathlib import Path

from svdcli.families.svd import SVDFamily
from svdcli.families.video_ldm.config import STAGES, VideoLDMConfig


class VideoLDMFamily(SVDFamily):
    name = "video_ldm"
    stages = STAGES
    config_type = VideoLDMConfig
    option_names = ("prompt", "long", "context_frames", "context_guidance", "interpolate", "input")

    def validate(self, cfg) -> None:
        from svdcli.families.video_ldm.config import validate

        validate(cfg)

    # --- training (encoders and training_vae are SVD's; the decoder stage has its own) ------
    def build(self, cfg, init: Path | None = None):
        if cfg.stage == "decoder":
            from svdcli.families.video_ldm.decoder import build_decoder_finetune

            return build_decoder_finetune(cfg, init)
        from svdcli.families.video_ldm.network import build_denoiser

        return build_denoiser(cfg, init)

    def encoders(self, cfg, device: str):
        return None if cfg.stage == "decoder" else super().encoders(cfg, device)

    def prepare(self, video, meta, encoders, cfg, gen, device):
        if cfg.stage == "decoder":
            from svdcli.families.video_ldm.batch import prepare_decoder_batch

            return prepare_decoder_batch(video, cfg, gen, device)
        from svdcli.families.video_ldm.batch import prepare_batch

        return prepare_batch(video, meta, encoders, cfg, gen, device)

    def training_sigmas(self, n: int, cfg, gen):
        if cfg.stage == "decoder":  # no diffusion: the decoder reconstructs clean frames
            import torch

            return torch.zeros(n)
        return super().training_sigmas(n, cfg, gen)

    def loss(self, denoiser, batch, sigma, noise):
        if "posterior_noise" not in batch.cond:
            return super().loss(denoiser, batch, sigma, noise)
        return denoiser(batch.x0, batch.cond["posterior_noise"], batch.frames, batch.step)

    def pack_vae(self, source: str):
        """A `--stage decoder` run folder means its newest export (the finetuned decoder)."""
        from svdcli import runs

        path = Path(source)
        if path.is_dir() and runs.config_file(path).is_file() and runs.read_config(path).get("stage") == "decoder":
            source = str(runs.resolve_checkpoint(path))
        return super().pack_vae(source)

    # --- checkpoints ---------------------------------------------------------------------
    def save(self, path: Path, state, cfg, metadata: dict[str, str]) -> None:
        """The denoiser's state as it is (`net.unet.*`, `net.context_convs.*`) with `metadata`;
        a decoder export is our SVD format (`vae.*`, loadable where SVD's VAE loads) plus
        `discriminator.*`, the frozen LPIPS network left out."""
        from safetensors.torch import save_file

        if cfg.stage == "decoder":
            from svdcli.families.svd.formats import FORMAT_TAG, FORMAT_VERSION
            from svdcli.families.video_ldm.decoder import decoder_vae_config

            kept = {k: v.contiguous() for k, v in state.items() if k.startswith(("vae.", "discriminator."))}
            save_file(kept, str(path), metadata={**metadata, "format": FORMAT_TAG, "format_version": FORMAT_VERSION,
                                                 "vae_config": decoder_vae_config(kept)})
            return
        save_file({k: v.contiguous() for k, v in state.items()}, str(path),
                  metadata={**metadata, "format": "svdcli-video-ldm"})

    def saved_state(self, path: Path):
        from safetensors.torch import load_file

        return load_file(str(path))

    def claims(self, header) -> bool:
        return header.family == self.name

    def load(self, header):
        from svdcli.families.video_ldm.sampling import load

        return load(self, header)

    # --- sampling ------------------------------------------------------------------------
    def sampling_defaults(self, model, options: dict):
        from svdcli.families.video_ldm.sampling import sampling_defaults

        return sampling_defaults(model, options)

    def resolve_options(self, model, options: dict, image, warn) -> dict:
        from svdcli.families.video_ldm.sampling import resolve_options

        self.check_option_names(options)
        return resolve_options(model, options, image, warn)

    def sampling_inputs(self, model, image, opts, device, dtype):
        from svdcli.families.video_ldm.sampling import sampling_inputs

        return sampling_inputs(model, image, opts, device, dtype)

    def guided_denoiser(self, model, opts, autocast_dtype):
        from svdcli.families.video_ldm.sampling import guided_denoiser

        return guided_denoiser(model, opts, autocast_dtype)

    def sample(self, model, inputs, opts, denoiser, sigmas, callback):
        from svdcli.families.video_ldm.sampling import sample

        return sample(model, inputs, opts, denoiser, sigmas, callback)

    def sampling_steps(self, model, opts) -> int:
        from svdcli.families.video_ldm.sampling import sampling_steps

        return sampling_steps(model, opts)

    def decode(self, model, x, opts):
        from svdcli.families.video_ldm.sampling import decode

        return decode(model, x, opts)
