"""The Video LDM family's training-config keys: the SVD keys (`model`, `weights`, `cond`,
`freeze_spatial`) with text conditioning and frozen spatial layers by default, plus the mask
conditioning of the prediction and interpolation models (Blattmann et al. 2023, Sec. 3.2-3.3)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from svdcli.families.svd.config import CondConfig, SVDConfig
from svdcli.families.svd.config import validate as validate_svd
from svdcli.typed_config import check, field_names, fill

STAGES = ("video", "predict", "interpolate", "decoder")


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
class VideoLDMConfig(SVDConfig):
    """Which context frames the prediction / interpolation models see in training."""

    freeze_spatial: bool = True           # Sec. 3.1: only the temporal layers train
    cond: CondConfig = field(default_factory=lambda: CondConfig(mode="t2v"))
    max_context_frames: int = 2           # Sec. 3.2: S drawn uniformly from {0, ..., 2}
    interpolation_factor: int = 4         # Sec. 3.3: T -> 4T (one pass fills 3 frames per gap)
    context_dropout: float = 0.1          # interpolate: prob. of dropping the keyframes (context CFG)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)   # the decoder stage (Sec. 3.1.1)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "VideoLDMConfig":
        cfg = cls()
        fill(cfg, {k: v for k, v in values.items() if k in field_names(cls)})
        return cfg


def validate(cfg) -> None:
    """Video LDM settings against the generic config `cfg` (a svdcli.train.config.TrainConfig)."""
    validate_svd(cfg)
    own: VideoLDMConfig = cfg.family_config
    check(cfg.stage in STAGES, f"video_ldm stages are {STAGES}; train the image model with --family svd "
                               f"--stage image (or --init an SD 2.1 file)")
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
    if cfg.stage == "interpolate":
        k = own.interpolation_factor
        check(k >= 2 and frames > k and (frames - 1) % k == 0,
              f"interpolate: data.frames - 1 must be a multiple of interpolation_factor ({k}), got {frames}")
        check(0.0 <= own.context_dropout < 1.0, "context_dropout must be in [0, 1)")
