"""The Video LDM family's training-config keys: the SVD keys (`model`, `weights`, `cond`,
`freeze_spatial`) with text conditioning and frozen spatial layers by default, the frozen image
model's parameterisation (`prediction`), the mask conditioning of the prediction and
interpolation models (Blattmann et al. 2023, Sec. 3.2-3.3) and the upsampler's (Sec. 3.4).

`model:` names the frozen image model the temporal layers go over (image_base.py says what
each is): `svd` / `tiny` our `svd train --stage image` network, `sd21` / `tiny_sd21` SD 2.x's
text-to-image UNet, `x4_upscaler` / `tiny_x4_upscaler` SD 2.x's x4 upscaler (`--stage upsample`).
The tiny ones are for tests and trying the commands on a CPU."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from svdcli.families.options import FamilyOptions, derived
from svdcli.families.svd.config import CondConfig, SVDConfig
from svdcli.families.svd.config import validate as validate_svd
from svdcli.typed_config import check

STAGES = ("video", "predict", "interpolate", "upsample", "decoder")
MODEL_PRESETS = ("tiny", "svd", "tiny_sd21", "sd21", "tiny_x4_upscaler", "x4_upscaler")
PREDICTIONS = ("auto", "edm", "v", "eps")


@dataclass
class DecoderConfig:
    """`decoder:` keys. The paper gives no values for this stage; these are the LDM kl-f8
    autoencoder's (latent-diffusion `autoencoder_kl_*.yaml`: perceptual_weight 1.0,
    disc_weight 0.5, disc_start 50001, a 3-layer 64-channel PatchGAN)."""

    train_spatial: bool = True       # finetune the whole decoder (False: its temporal layers only)
    perceptual_weight: float = 1.0   # LPIPS(vgg) weight; 0 trains without it (and needs no weights)
    lpips_backbone: str = ""         # VGG16 file; "" = torch's cache; "random" = test mode
    disc_weight: float = 0.5
    disc_start: int = 50001          # optimizer steps before the adversarial terms switch on
    disc_channels: int = 64
    disc_layers: int = 3

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class UpsampleConfig:
    """`upsample:` keys of the video upsampler (Sec. 3.4): SD 2.x's x4 upscaler, whose latents sit
    on the low-resolution pixel grid (its VAE downsamples by 4), given the noise-augmented
    low-resolution frames as 3 more input channels and the noise level as its class label."""

    patch: int = 0               # training patch side in pixels (0: whole frames); Sec. 3.4 trains on patches
    max_noise_level: int = 350   # noise level ~ U{0, ..., max - 1} (the x4 upscaler's max_noise_level)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class VideoLDMConfig(SVDConfig):
    """The frozen image model, and which context frames the prediction / interpolation models see
    in training."""

    freeze_spatial: bool = True           # Sec. 3.1: only the temporal layers train
    cond: CondConfig = field(default_factory=lambda: CondConfig(mode="t2v"))
    prediction: str = "auto"              # edm | v | eps: the image model's; auto: edm for ours, v for SD 2.x
    max_context_frames: int = 2           # Sec. 3.2: S drawn uniformly from {0, ..., 2}
    interpolation_factor: int = 4         # Sec. 3.3: T -> 4T (one pass fills 3 frames per gap)
    context_dropout: float = 0.1          # interpolate: prob. of dropping the keyframes (context CFG)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)   # the decoder stage (Sec. 3.1.1)
    upsample: UpsampleConfig = field(default_factory=UpsampleConfig)  # the upsample stage (Sec. 3.4)


@dataclass
class VideoLDMOptions(FamilyOptions):
    """`svd sample` options of Video LDM checkpoints: the uses of its three models (one clip,
    --long, --interpolate, --upsample) and their inputs."""

    prompt: str | None = None
    long: bool = False                   # a prediction model, chunk after chunk (Sec. 3.2)
    context_frames: int | None = None    # --long: frames carried into the next chunk (the model's max)
    context_guidance: float = 1.0        # --long: guidance scale w on the context frames
    interpolate: int | None = None       # an interpolation model's factor, a power of its own (Sec. 3.3)
    input: Path | None = None            # the keyframes of --interpolate, the video of --upsample
    upsample: int | None = None          # the video upsampler's factor (Sec. 3.4)
    noise_level: int | None = None       # --upsample: the input's noise augmentation level
    fps_id: int | None = None            # our image stage's micro-conditioning (svd sample's defaults)
    motion_bucket_id: int | None = None
    passes: int = derived(0)             # --interpolate: passes of the model's factor
    keyframes: Any = derived()           # --interpolate: the --input frames (T, 3, H, W) in [-1, 1]
    low_res: Any = derived()             # --upsample: the --input frames
    input_fps: float | None = derived()  # the --input video's rate


def validate(cfg) -> None:
    """Video LDM settings against the generic config `cfg` (a svdcli.train.config.TrainConfig)."""
    from svdcli.families.video_ldm.image_base import layout, resolved_prediction

    validate_svd(cfg, MODEL_PRESETS)
    own: VideoLDMConfig = cfg.family_config
    check(cfg.stage in STAGES, f"video_ldm stages are {STAGES}; train the image model with --family svd "
                               f"--stage image (or --init an SD 2.1 file)")
    check(own.prediction in PREDICTIONS, f"prediction must be one of {PREDICTIONS}, not {own.prediction!r}")
    if cfg.stage != "decoder":
        ours = layout(own) == "svd"
        check(ours == (resolved_prediction(own) == "edm"),
              f"prediction {own.prediction} does not fit model {own.model}: our image models (tiny, svd) are "
              "EDM-trained (prediction: edm); SD 2.x models predict v or eps (768-v files: v; 512 base files: eps)")
        check((cfg.stage == "upsample") == (layout(own) == "upscaler"),
              "the upsample stage trains over SD 2.x's x4 upscaler (model: x4_upscaler or tiny_x4_upscaler), "
              "and the x4 upscaler only in the upsample stage")
    check(own.freeze_spatial, "video_ldm trains temporal layers over a frozen image model: freeze_spatial must be true")
    check(cfg.lora.rank == 0, "video_ldm trains its temporal layers in full: lora.rank must be 0")
    check(own.cond.mode in ("t2v", "none"), "video_ldm is text-to-video: cond.mode must be t2v or none")
    frames = cfg.data.frames
    if cfg.stage == "decoder":
        d = own.decoder
        check(not cfg.data.latents, "the decoder stage trains on pixels: data.latents must be false")
        check(frames >= 2, "the decoder stage trains on videos: data.frames must be at least 2")
        check(d.perceptual_weight >= 0 and d.disc_weight >= 0, "decoder weights must be >= 0")
        check(d.disc_layers >= 1 and d.disc_channels >= 4, "decoder.disc_layers >= 1 and disc_channels >= 4")
    if cfg.stage == "predict":
        check(0 <= own.max_context_frames < frames,
              f"max_context_frames must be in [0, data.frames) = [0, {frames})")
    if cfg.stage == "upsample":
        validate_upsample(cfg)
    if cfg.stage == "interpolate":
        k = own.interpolation_factor
        check(k >= 2 and frames > k and (frames - 1) % k == 0,
              f"interpolate: data.frames - 1 must be a multiple of interpolation_factor ({k}), got {frames}")
        check(0.0 <= own.context_dropout < 1.0, "context_dropout must be in [0, 1)")


def validate_upsample(cfg) -> None:
    u, d = cfg.family_config.upsample, cfg.data
    check(not d.latents, "the upsample stage encodes its patches itself: data.latents must be false")
    check(d.frames >= 2, "the upsample stage trains on videos: data.frames must be at least 2")
    check(u.patch == 0 or (u.patch % 64 == 0 and 0 < u.patch <= min(d.height, d.width)),
          f"upsample.patch must be 0 (whole frames) or a multiple of 64 up to the frame size "
          f"({d.height}x{d.width}), got {u.patch}")
    check(1 <= u.max_noise_level <= 1000, "upsample.max_noise_level must be in [1, 1000]")
