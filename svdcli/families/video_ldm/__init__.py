"""Video LDM, "Align your Latents" (Blattmann, Rombach, Ling, Dockhorn, Kim, Fidler, Kreis;
CVPR 2023, arXiv 2304.08818): temporal layers over a frozen image LDM, a prediction model for
long videos and a temporal interpolation model, both through a binary temporal mask, a video
upsampler and a temporally finetuned decoder.

    config.py      the family's config keys (SVD's, the image model's parameterisation, the
                   context frames of Sec. 3.2-3.3, the upsampler's and the decoder's) and its
                   sampling options (`VideoLDMOptions`)
    training.py    its training methods: each stage's network, encoders, batch, loss, export
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

from svdcli.families.base import Family
from svdcli.families.video_ldm.config import STAGES, VideoLDMConfig, VideoLDMOptions


class VideoLDMFamily(Family):
    """config.py, training.py and sampling.py hold its methods (svdcli.families.base)."""

    name = "video_ldm"
    stages = STAGES
    config_type = VideoLDMConfig
    Options = VideoLDMOptions

    def requirements(self, cfg) -> tuple[str, ...]:
        """LPIPS for the decoder stage's perceptual term."""
        return ("lpips",) if cfg.stage == "decoder" and cfg.family_config.decoder.perceptual_weight > 0 else ()
