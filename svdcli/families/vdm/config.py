"""The VDM family's keys of a training config, and the network config they give.

Frames and image size are the generic `data.frames`, `data.height`, `data.width` (the network
itself is frame-count free: temporal attention only sees frame offsets). Everything else the
network needs (`VDMNetConfig`) follows from these keys; every checkpoint saves it resolved
(`net_config`) beside the training config and is rebuilt from it. `VDMOptions` are the
family's `svd sample` options.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from svdcli.families.options import FamilyOptions, choice
from svdcli.typed_config import RecipeKeys, check, field_names, fill

PARAMETERISATIONS = ("eps", "v")
TEXT_TOWERS = ("none", "tiny", "open_clip")
OPEN_CLIP_WIDTH = 1024   # ViT-H-14 text tower (SD 2.1's), the width of its token features


@dataclass
class VDMNetConfig:
    """The factorised space-time U-Net (Ho et al. 2022, sec. 3) as a checkpoint stores it."""

    channels: int = 32                       # width of the first level
    mults: tuple[int, ...] = (1, 2)          # width multiplier per level; one 2x downsampling between levels
    heads: int = 2                           # spatial and temporal attention heads
    attention_levels: tuple[int, ...] = (1,)  # levels with spatial + temporal attention (the middle always has)
    num_res_blocks: int = 1
    max_offset: int = 32                     # relative frame offsets beyond +-max_offset share one bias
    context_dim: int = 0                     # text token width; 0: unconditional

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, values: dict) -> "VDMNetConfig":
        cfg = cls()
        fill(cfg, {k: v for k, v in values.items() if k in field_names(cls)})
        # typed_config reads tuples as floats
        return dataclasses.replace(cfg, mults=_ints(cfg.mults), attention_levels=_ints(cfg.attention_levels))


def _ints(values) -> tuple[int, ...]:
    return tuple(int(v) for v in values)


@dataclass
class VDMConfig(RecipeKeys):
    """What a VDM recipe sets beside the generic keys (its `model` preset and diffusion choices)."""

    model: str = "tiny"                      # tiny (tests, CPU) or base (the paper's 64x64 scale)
    channels: int = 0                        # 0: the preset's; else overrides it
    mults: tuple[int, ...] = ()              # (): the preset's
    heads: int = 0                           # 0: the preset's
    parameterisation: str = "v"              # eps or v (Salimans & Ho 2022; later Imagen Video uses v)
    cond_dropout: float = 0.1                # prob. of dropping the text for classifier-free guidance
    image_ratio: float = 0.0                 # joint training: independent images per video frame (0.25: 16 + 4)
    text: str = "none"                       # none, tiny (seeded random tower) or open_clip (ViT-H-14 weights)
    text_dim: int = 32                       # width of the tiny text tower
    logsnr_min: float = -20.0                # truncated cosine schedule (VDM / Imagen code)
    logsnr_max: float = 20.0

    def net(self) -> VDMNetConfig:
        """The network of the preset with this config's overrides."""
        base = PRESETS[self.model]()
        context = {"none": 0, "tiny": self.text_dim, "open_clip": OPEN_CLIP_WIDTH}[self.text]
        return dataclasses.replace(base, channels=self.channels or base.channels,
                                   mults=_ints(self.mults) or base.mults, heads=self.heads or base.heads,
                                   context_dim=context)


@dataclass
class VDMOptions(FamilyOptions):
    """`svd sample` options of VDM checkpoints."""

    prompt: str | None = None            # models trained with a text tower
    input: Path | None = None            # the video --extend continues or --upsample enlarges
    extend: int | None = None            # frames to add after the end of --input
    upsample: int | None = None          # spatial factor of --input
    guidance_weight: float = 4.0         # w_r; the paper finds w_r > 1 matters (4 is best of 4, 16, 64 here)
    conditioning: str = choice("reconstruction", "replacement")


def tiny() -> VDMNetConfig:
    """A few hundred thousand parameters: trains in seconds on a CPU at 16-32 px."""
    return VDMNetConfig(channels=16, mults=(1, 2), heads=2, attention_levels=(1,), num_res_blocks=1)


def base() -> VDMNetConfig:
    """The paper's 64x64 scale (sec. 4: 16 frames, 64x64), a U-Net of four levels."""
    return VDMNetConfig(channels=128, mults=(1, 2, 3, 4), heads=8, attention_levels=(1, 2, 3), num_res_blocks=2)


PRESETS = {"tiny": tiny, "base": base}


def validate(cfg) -> None:
    """VDM settings against the generic config `cfg` (a svdcli.train.config.TrainConfig)."""
    own: VDMConfig = cfg.family_config
    check(own.model in PRESETS, f"model must be one of {tuple(PRESETS)}, not {own.model!r}")
    check(own.parameterisation in PARAMETERISATIONS,
          f"parameterisation must be one of {PARAMETERISATIONS}, not {own.parameterisation!r}")
    check(own.text in TEXT_TOWERS, f"text must be one of {TEXT_TOWERS}, not {own.text!r}")
    check(0.0 <= own.cond_dropout < 1.0, "cond_dropout must be in [0, 1)")
    check(own.image_ratio >= 0.0, "image_ratio must be >= 0")
    check(own.logsnr_min < own.logsnr_max, "logsnr_min must be below logsnr_max")
    net = own.net()
    check(net.channels % 8 == 0 or net.channels < 8, "channels must be a multiple of 8 (GroupNorm groups)")
    factor = 2 ** (len(net.mults) - 1)
    d = cfg.data
    check(d.height % factor == 0 and d.width % factor == 0,
          f"data.height and data.width must be multiples of {factor} ({len(net.mults) - 1} downsamplings), "
          f"got {d.height}x{d.width}")
    check(not d.latents, "vdm trains in pixel space: data.latents must be false")
    check(cfg.lora.rank == 0, "vdm has no LoRA support: lora.rank must be 0")
