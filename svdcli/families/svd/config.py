"""The SVD family's keys of a training config, and the checks that tie them to the generic ones.

They sit at the top level of a recipe beside the generic keys (`model: svd`, `cond: {...}`),
as they always have, so every existing recipe and run folder reads unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from svdcli.families.options import FamilyOptions
from svdcli.typed_config import RecipeKeys, check

MODEL_PRESETS = ("tiny", "svd")
COND_MODES = ("i2v", "t2v", "none")
LORA_TARGETS = ("temporal_attention",)


@dataclass
class CondConfig:
    mode: str = "i2v"         # i2v: first-frame image conditioning; t2v: captions; none
    dropout: float = 0.1      # prob. of zeroing crossattn/concat (and the text) for CFG
    cond_aug_p_mean: float = -3.0  # ln cond_aug ~ N(p_mean, p_std^2): noise on the cond frame
    cond_aug_p_std: float = 0.5
    text_dropout: float = 0.15     # t2v only (SVD video pretraining: 15%)


@dataclass
class SVDConfig(RecipeKeys):
    """Which SVD network and encoders train, and how they are conditioned."""

    model: str = "tiny"       # UNetConfig preset: tiny (tests, CPU) or svd (the paper's size)
    weights: str = ""         # svd: official SVD .safetensors supplying the VAE and CLIP image tower;
    #                           tiny: optional file whose VAE replaces the seeded random one
    freeze_spatial: bool = False   # Video LDM: train only the temporal layers
    cond: CondConfig = field(default_factory=CondConfig)


@dataclass
class SVDOptions(FamilyOptions):
    """`svd sample` options of SVD checkpoints (the official sampler's defaults)."""

    fps_id: int = 6                      # the output plays at fps_id + 1
    motion_bucket_id: int = 127
    cond_aug: float = 0.02               # noise on the conditioning image
    prompt: str | None = None            # text-conditioned checkpoints
    temporal_prompt: str | None = None   # their temporal cross-attention only (SVD paper sec. 6.4)
    decode_chunk: int | None = None      # frames per temporal-VAE call (None: the model's)
    model: str | None = None             # svd or svd_xt: whose defaults
    lora: list | None = None             # [(file, scale), ...] applied to the UNet (checked: resolve)
    elevation: float | None = None       # multi-view checkpoints: the input view's elevation (degrees)


def unet_config(preset: str, stage: str | None = None):
    """The UNetConfig of a `model:` preset; the multiview stage's takes the camera elevation too."""
    from svdcli.models.config import UNetConfig

    cfg = UNetConfig.tiny() if preset == "tiny" else UNetConfig.svd()
    if stage == "multiview":
        from svdcli.families.svd.multiview import unet_config as multiview_unet

        cfg = multiview_unet(cfg)
    return cfg


def validate(cfg, presets: tuple[str, ...] = MODEL_PRESETS) -> None:
    """SVD settings against the generic config `cfg` (a svdcli.train.config.TrainConfig); a family
    built on SVD's keys names its own `model:` presets."""
    own: SVDConfig = cfg.family_config
    check(own.model in presets, f"model must be one of {presets}, not {own.model!r}")
    check(own.cond.mode in COND_MODES, f"cond.mode must be one of {COND_MODES}, not {own.cond.mode!r}")
    d = cfg.data
    # the VAE downsamples by 8 and the UNet's three downsamplers by 8 more: latents must halve cleanly
    check(d.height % 64 == 0 and d.width % 64 == 0 and d.height > 0 and d.width > 0,
          f"data.height and data.width must be positive multiples of 64 (VAE factor 8 x three UNet "
          f"downsamplings), got {d.height}x{d.width}")
    check(0.0 <= own.cond.dropout < 1.0 and 0.0 <= own.cond.text_dropout < 1.0,
          "cond.dropout and cond.text_dropout must be in [0, 1)")
    check(own.cond.cond_aug_p_std > 0, "cond.cond_aug_p_std must be > 0")
    check(cfg.lora.target in LORA_TARGETS, "lora.target: only 'temporal_attention' is supported")
    check(not (cfg.lora.rank and own.freeze_spatial),
          "lora.rank > 0 already trains only the LoRA weights; drop freeze_spatial")
    if cfg.stage == "image":
        check(not own.freeze_spatial, "the image stage trains the spatial layers: freeze_spatial must be false")
        check(cfg.lora.rank == 0, "LoRA targets temporal attention, which the image stage does not train")
        check(own.cond.mode != "i2v", "the image stage cannot condition on its own first frame: use cond.mode t2v or none")
    if cfg.stage == "multiview":
        check(own.cond.mode == "i2v", "the multiview stage generates an orbit from one view: cond.mode must be i2v")
        check(cfg.lora.rank == 0, "the multiview stage trains the new elevation embedding: lora.rank must be 0")
