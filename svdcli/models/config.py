"""Typed configs of the video UNet. Field names follow the official sgm `VideoUNet` arguments so
a config reads like the official yaml; the config travels inside every checkpoint we write."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

MERGE_STRATEGIES = ("fixed", "learned", "learned_with_images")


@dataclass
class UNetConfig:
    """Sizes and switches of the SVD video UNet (defaults: the full SVD / SVD-XT network)."""

    in_channels: int = 8                # 4 noisy latent + 4 conditioning-frame latent
    out_channels: int = 4
    model_channels: int = 320
    channel_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    attention_resolutions: tuple[int, ...] = (4, 2, 1)   # downsampling factors with attention
    num_head_channels: int = 64         # heads = channels // num_head_channels
    num_heads: int = -1                 # > 0: this many heads at every level instead (SD's x4 upscaler: 8)
    transformer_depth: int = 1
    context_dim: int = 1024             # cross-attention context (CLIP image embedding)
    adm_in_channels: int | None = 768   # the micro-conditioning vector; None: no label_emb
    num_classes: int | None = None      # label_emb as a class embedding (SD's x4 upscaler: noise level 0..999)
    disable_self_attentions: tuple[bool, ...] | None = None  # per level: attn1 attends to the context too (x4 upscaler)
    use_linear_in_transformer: bool = True
    extra_ff_mix_layer: bool = True
    use_spatial_context: bool = True    # temporal cross-attention to the first frame's context
    merge_strategy: str = "learned_with_images"
    merge_factor: float = 0.5
    video_kernel_size: tuple[int, int, int] = (3, 1, 1)
    disable_temporal_crossattention: bool = False
    max_ddpm_temb_period: int = 10000   # period of the frame-index embedding
    dropout: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)  # free-form notes kept with the config

    def __post_init__(self) -> None:
        self.channel_mult = tuple(int(m) for m in self.channel_mult)
        # descending, as in sgm yamls, so equal configs compare equal
        self.attention_resolutions = tuple(sorted({int(r) for r in self.attention_resolutions},
                                                  reverse=True))
        self.video_kernel_size = tuple(int(k) for k in self.video_kernel_size)
        if self.disable_self_attentions is not None:
            self.disable_self_attentions = tuple(bool(d) for d in self.disable_self_attentions)
            if len(self.disable_self_attentions) != len(self.channel_mult):
                raise ValueError("disable_self_attentions needs one value per level (channel_mult)")
        if self.num_classes is not None and self.adm_in_channels is not None:
            raise ValueError("label_emb is either a class embedding (num_classes) or a vector (adm_in_channels)")
        if self.merge_strategy not in MERGE_STRATEGIES:
            raise ValueError(f"merge_strategy must be one of {MERGE_STRATEGIES}, "
                             f"got {self.merge_strategy!r}")
        for mult in self.channel_mult:
            if (self.model_channels * mult) % 32:
                raise ValueError("every level's channel count must be a multiple of 32 "
                                 "(GroupNorm with 32 groups)")
            if (self.model_channels * mult) % self.heads_divisor:
                raise ValueError("channels must be a multiple of num_heads (or of num_head_channels)")

    # --- presets -------------------------------------------------------------------------
    @classmethod
    def svd(cls) -> "UNetConfig":
        """The official SVD / SVD-XT UNet (1,524,623,082 parameters)."""
        return cls()

    @classmethod
    def tiny(cls, **overrides: Any) -> "UNetConfig":
        """A 2.9M-parameter UNet with SVD's structure (the reference fixture's config)."""
        base = cls(model_channels=32, channel_mult=(1, 1, 1, 2), num_head_channels=16,
                   context_dim=40, adm_in_channels=24)
        return dataclasses.replace(base, **overrides)

    # --- (de)serialisation ----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for key in ("channel_mult", "attention_resolutions", "video_kernel_size", "disable_self_attentions"):
            d[key] = list(d[key]) if d[key] is not None else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "UNetConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown UNet config keys: {', '.join(unknown)}")
        return cls(**d)

    @classmethod
    def from_sgm_params(cls, params: dict[str, Any]) -> "UNetConfig":
        """Build from the constructor arguments of sgm's `VideoUNet` (the `params:` of a yaml)."""
        unsupported = {"dims": 2, "use_scale_shift_norm": False, "resblock_updown": False,
                       "time_downup": False, "num_heads": -1, "conv_resample": True,
                       "time_context_dim": None, "transformer_depth_middle": None}
        for key, expected in unsupported.items():
            if key in params and params[key] != expected:
                raise ValueError(f"sgm VideoUNet option {key}={params[key]!r} is not supported")
        if params.get("num_classes") not in (None, "sequential"):
            raise ValueError("only num_classes='sequential' (the SVD vector) is supported")
        known = {f.name for f in dataclasses.fields(cls)} - {"extra", "num_classes"}
        kwargs = {k: v for k, v in params.items() if k in known}
        if params.get("num_classes") is None:
            kwargs["adm_in_channels"] = None
        return cls(**kwargs)

    # --- derived sizes --------------------------------------------------------------------
    @property
    def time_embed_dim(self) -> int:
        return self.model_channels * 4

    def level_channels(self) -> list[int]:
        return [self.model_channels * m for m in self.channel_mult]

    def level_has_attention(self, level: int) -> bool:
        return 2 ** level in self.attention_resolutions

    @property
    def heads_divisor(self) -> int:
        return self.num_heads if self.num_heads > 0 else self.num_head_channels

    def heads(self, channels: int) -> tuple[int, int]:
        """(heads, channels per head) of a transformer with `channels` channels."""
        if self.num_heads > 0:
            return self.num_heads, channels // self.num_heads
        return channels // self.num_head_channels, self.num_head_channels

    def self_attention_disabled(self, level: int) -> bool:
        return bool(self.disable_self_attentions and self.disable_self_attentions[level])
