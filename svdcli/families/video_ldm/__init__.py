"""Video LDM, "Align your Latents" (Blattmann, Rombach, Ling, Dockhorn, Kim, Fidler, Kreis;
CVPR 2023, arXiv 2304.08818): temporal layers over a frozen image LDM, a prediction model for
long videos and a temporal interpolation model, both through a binary temporal mask.

    config.py    the family's config keys (SVD's, plus the context frames of Sec. 3.2-3.3)
    network.py   SVD's VideoUNet + the mask conditioning added into the temporal layers
    batch.py     loader batch -> latents, caption embedding, context mask
    sampling.py  one-shot, chunk-after-chunk (--long) and interpolation (--interpolate) loops
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

    # --- training (encoders and training_vae are SVD's) ---------------------------------------
    def build(self, cfg, init: Path | None = None):
        from svdcli.families.video_ldm.network import build_denoiser

        return build_denoiser(cfg, init)

    def prepare(self, video, meta, encoders, cfg, gen, device):
        from svdcli.families.video_ldm.batch import prepare_batch

        return prepare_batch(video, meta, encoders, cfg, gen, device)

    # --- checkpoints ---------------------------------------------------------------------
    def save(self, path: Path, state, cfg, metadata: dict[str, str]) -> None:
        """The denoiser's state as it is (`net.unet.*`, `net.context_convs.*`) with `metadata`."""
        from safetensors.torch import save_file

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
