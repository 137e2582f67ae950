"""Video Diffusion Models (Ho, Salimans, Gritsenko, Chan, Norouzi, Fleet; 2022, arXiv 2204.03458):
a pixel-space U-Net factorised over space and time, continuous-time cosine diffusion with eps
or v prediction, joint image-video training, ancestral sampling, and conditional sampling from
the unconditional model by reconstruction guidance (extension, super-resolution).

    config.py     the family's training-config keys, the network presets (tiny, base), its
                  sampling options (`VDMOptions`)
    network.py    the space-time U-Net (1x3x3 convs, spatial + relative-position temporal attention)
    text.py       optional text towers (tiny seeded, or OpenCLIP ViT-H-14 from local weights)
    training.py   the network built and saved with its config, joint image-video batches, noise
                  levels (the eps / v loss is the denoiser's own)
    guidance.py   reconstruction guidance (eq. 7) and the replacement baseline, as pure samplers
    sampling.py   loading, options, noise, the sampling loops of `svd sample`
This module imports no torch.
"""
from __future__ import annotations

from svdcli.families.base import Family
from svdcli.families.vdm.config import VDMConfig, VDMOptions


class VDMFamily(Family):
    """config.py, training.py and sampling.py hold its methods (svdcli.families.base)."""

    name = "vdm"
    stages = ("video",)
    config_type = VDMConfig
    Options = VDMOptions
    sampler_names = ("ancestral",)
