"""Video LDM, "Align your Latents" (Blattmann, Rombach, Ling, Dockhorn, Kim, Fidler, Kreis;
CVPR 2023, arXiv 2304.08818): temporal layers over a frozen image LDM, a prediction model for
long videos and a temporal interpolation model, both through a binary temporal mask, a video
upsampler and a temporally finetuned decoder.

    config.py      the family's config keys (SVD's, the image model's parameterisation, the
                   context frames of Sec. 3.2-3.3, the upsampler's and the decoder's)
    image_base.py  the frozen image model: layout, parameterisation (EDM or SD's eps / v on its
                   discrete schedule), unconditional text, VAE and text tower
    network.py     SVD's VideoUNet + the mask conditioning added into the temporal layers
    batch.py       loader batch -> latents, caption embedding, context mask
    sampling.py    loading, options, guidance, one-shot sampling, decoding;
                   long_video.py the --long and --interpolate loops; upsample.py the video
                   upsampler (`--stage upsample`, `--upsample 4`, Sec. 3.4)
    decoder.py     the decoder temporal finetune (`--stage decoder`, Sec. 3.1.1) and its losses;
                   discriminator.py its patch-wise temporal discriminator
The network is SVD's (svdcli.models.unet) in the image model's layout; this family differs in
which layers train, the parameterisation, the mask conditioning and its sampling loops.
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
    option_names = ("prompt", "long", "context_frames", "context_guidance", "interpolate", "input", "upsample",
                    "noise_level", "fps_id", "motion_bucket_id")

    def validate(self, cfg) -> None:
        from svdcli.families.video_ldm.config import validate

        validate(cfg)

    # --- training (training_vae is SVD's; the decoder stage has its own) --------------------
    def build(self, cfg, init: Path | None = None):
        if cfg.stage == "decoder":
            from svdcli.families.video_ldm.decoder import build_decoder_finetune

            return build_decoder_finetune(cfg, init)
        from svdcli.families.video_ldm.network import build_denoiser

        return build_denoiser(cfg, init)

    def encoders(self, cfg, device: str):
        if cfg.stage == "decoder":
            return None
        from svdcli.families.video_ldm.image_base import build_encoders

        return build_encoders(cfg.family_config, cfg.seed).to(device)

    def prepare(self, video, meta, encoders, cfg, gen, device):
        if cfg.stage == "decoder":
            from svdcli.families.video_ldm.batch import prepare_decoder_batch

            return prepare_decoder_batch(video, cfg, gen, device)
        if cfg.stage == "upsample":
            from svdcli.families.video_ldm.upsample import prepare_batch as prepare_upsample

            return prepare_upsample(video, meta, encoders, cfg, gen, device)
        from svdcli.families.video_ldm.batch import prepare_batch

        return prepare_batch(video, meta, encoders, cfg, gen, device)

    def training_sigmas(self, n: int, cfg, gen):
        """The image model's training noise levels: SD's uniform timesteps, or EDM's log-normal."""
        import torch

        if cfg.stage == "decoder":  # no diffusion: the decoder reconstructs clean frames
            return torch.zeros(n)
        from svdcli.families.video_ldm.image_base import schedule

        sched = schedule(cfg.family_config)
        return super().training_sigmas(n, cfg, gen) if sched is None else sched.sample_sigmas(n, gen)

    def loss(self, denoiser, batch, sigma, noise):
        """The image model's own objective (eps- or v-MSE for SD, EDM eq. 8 for ours) on every frame."""
        if "posterior_noise" in batch.cond:
            return denoiser(batch.x0, batch.cond["posterior_noise"], batch.frames, batch.step)
        from svdcli.diffusion.edm import edm_loss

        scaling = getattr(denoiser, "module", denoiser).scaling      # a DeepSpeed engine wraps the denoiser
        return edm_loss(denoiser, batch.x0, batch.cond, batch.frames, sigma=sigma.to(batch.x0.device),
                        noise=noise, weight=scaling.loss_weight)

    def pack_vae(self, source: str):
        """A `--stage decoder` run folder means its newest export (the finetuned decoder); a run
        over a tiny image model, the tiny VAE it trained with (`tiny:SEED`)."""
        from svdcli import runs

        path = Path(source)
        if path.is_dir() and runs.config_file(path).is_file():
            values = runs.read_config(path)
            if values.get("stage") == "decoder":
                source = str(runs.resolve_checkpoint(path))
            elif str(values.get("model", "")).startswith("tiny") and values.get("model") != "tiny_x4_upscaler":
                source = f"tiny:{int(values.get('seed', 0))}"
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
    def sigmas(self, model, steps: int, device):
        from svdcli.families.video_ldm.sampling import sigmas

        return sigmas(model, steps, device)

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
