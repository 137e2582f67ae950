"""Tune-A-Video (Wu et al., ICCV 2023, arXiv 2212.11565): one-shot tuning of a text-to-image
model on one text-video pair, then editing that video by prompt.

    config.py     the family's training-config keys (base, prompt, prediction, text, attention)
                  and its sampling options (`TAVOptions`: prompt, tuned, invert)
    base.py       the image model inflated: our `--stage image` export or an SD 2.1 file
    inflate.py    inflation (per-frame convs, ST-Attn, temporal attention) and what tunes
    network.py    the denoiser and its conditioning
    training.py   the `tune` stage: the inflated network, batch, noise levels, the delta export
    delta.py      the tuned tensors as a delta file tied to the base's sha256
    sampling.py   loading a base or a delta, DDIM inversion of the source video, DDIM with guidance
`svd tune` (svdcli/cli/tune.py) packs the clip and runs the `tune` stage through `svd train`'s
engine; `svd sample --family tune_a_video --checkpoint BASE --tuned RUN` edits. No torch here.
"""
from __future__ import annotations

from svdcli.families.base import Family
from svdcli.families.tune_a_video.config import TAVConfig, TAVOptions


class TuneAVideoFamily(Family):
    """config.py, training.py and sampling.py hold its methods (svdcli.families.base)."""

    name = "tune_a_video"
    stages = ("tune",)
    config_type = TAVConfig
    Options = TAVOptions
    sampler_names = ("ddim",)
