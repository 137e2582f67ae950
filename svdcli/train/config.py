"""Typed training configuration: dataclasses filled from a stage YAML and `key=value` overrides.

Generic keys (stage, steps, data, noise, optim, ema, lora, ...) are defined here; the model
family named by `family:` (default svd) owns the rest of the top-level keys (for SVD: `model`,
`weights`, `freeze_spatial`, `cond`), held in `TrainConfig.family_config`. The resolved config
is written to `RUN_DIR/config.yaml` and inside every checkpoint, so a run can be resumed or
reproduced from its own files. Every field is validated here (and by the family), before any
model is built, so a typo in a recipe fails in a second with a message naming the key.

`stage` is the TRAINING stage (svd: image, video, finetune), not a curation stage.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from svdcli.train.validation import ValidationConfig
from svdcli.train.validation import check as check_validation
from svdcli.typed_config import ConfigError, check, field_names, fill, parse_overrides, read_yaml

__all__ = ["ConfigError", "TrainConfig", "config_from_dict", "dump_yaml", "load_config", "read_yaml"]

PRECISIONS = ("bf16", "fp32")
DEFAULT_FAMILY = "svd"


@dataclass
class DataConfig:
    frames: int = 14          # T; the image stage forces 1
    height: int = 256         # pixels; latents are height/8 x width/8
    width: int = 384
    batch_size: int = 1       # per process (DeepSpeed's train_micro_batch_size_per_gpu)
    grad_accum: int = 1
    num_workers: int = 2
    shuffle_buffer: int = 64
    latents: bool = False     # x0 from the shards' latents.npy (`svd pack --latents`), not the VAE encoder
    posterior: str = "sample"  # on-the-fly x0: VAE posterior "sample" (sgm) or "mode"; stored latents are the mode


@dataclass
class NoiseConfig:
    """EDM training noise: ln sigma ~ N(p_mean, p_std^2) (Karras et al. 2022, eq. 5 / table 1)."""

    p_mean: float = -1.2
    p_std: float = 1.2


OPTIMIZERS = ("adamw", "adamw8bit")


@dataclass
class OptimConfig:
    name: str = "adamw"       # adamw (torch), adamw8bit (bitsandbytes' 8-bit AdamW: 2 bytes of state per weight, not 8)
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    eps: float = 1e-8
    warmup_steps: int = 0
    grad_clip: float = 1.0


@dataclass
class EMAConfig:
    enabled: bool = True
    decay: float = 0.9999


@dataclass
class LoRAConfig:
    rank: int = 0             # 0 = off; the camera-motion finetunes use 16
    alpha: float = 16.0       # update is scaled by alpha / rank
    target: str = "temporal_attention"   # which layers; the family says which it has


@dataclass
class TrainConfig:
    family: str = DEFAULT_FAMILY   # model family (svdcli.families): its network, encoders, formats
    stage: str = "video"      # training stage the family runs (svd: image | video | finetune)
    steps: int = 1000
    seed: int = 0
    precision: str = "bf16"
    activation_checkpointing: bool = False
    checkpoint_every: int = 500
    log_every: int = 10
    keep_checkpoints: int = 3
    data: DataConfig = field(default_factory=DataConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    ema: EMAConfig = field(default_factory=EMAConfig)
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)   # svdcli/train/validation.py
    # not a key: the family's own keys, which sit beside these at the top level of a recipe
    family_config: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.family_config is None:
            self.family_config = family_of(self).config_type()

    def to_dict(self) -> dict:
        """Generic keys and the family's keys in one flat mapping, as a recipe writes them."""
        generic = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "family_config"}
        out = {"family": self.family, "stage": self.stage, **self.family_config.to_dict()}
        for name, value in generic.items():
            out.setdefault(name, dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value)
        return out

    @property
    def frames(self) -> int:
        """Frames per sample as trained: the image stage trains on single frames."""
        return 1 if self.stage == "image" else self.data.frames


def family_of(cfg: TrainConfig):
    from svdcli.families import family_for

    return family_for(cfg.family)


def _fill(cfg: TrainConfig, values: dict) -> None:
    """Generic keys into `cfg`, the family's keys into `cfg.family_config`; others are errors."""
    generic = set(field_names(cfg)) - {"family_config"}
    own = set(field_names(cfg.family_config))
    unknown = sorted(set(values) - generic - own)
    if unknown:
        raise ConfigError(f"unknown config key {unknown[0]!r} (known here: {', '.join(sorted(generic | own))})")
    fill(cfg, {k: v for k, v in values.items() if k in generic})
    fill(cfg.family_config, {k: v for k, v in values.items() if k in own})


def load_config(path: str | Path | None, overrides: list[str] = (), stage: str | None = None,
                family: str | None = None) -> TrainConfig:
    """Read a stage YAML, apply overrides (and `stage` / `family`, which must agree with the YAML), validate."""
    values = read_yaml(Path(path)) if path is not None else {}
    for key, given in (("family", family), ("stage", stage)):
        if given is None:
            continue
        if key in values and values[key] != given:
            raise ConfigError(f"--{key} {given} but {path} is a {values[key]!r} config")
        values[key] = given
    return config_from_dict(values, overrides, source=path)


def config_from_dict(values: dict, overrides: list[str] = (), source: str | Path | None = None) -> TrainConfig:
    """A validated config from `values` (a recipe, or one saved in a run dir) and `key=value`
    overrides; an error in `values` names `source`, the file they came from. A config without
    `family` (every one written before families existed) is an svd config."""
    from svdcli.families import family_for

    extra = parse_overrides(list(overrides))
    name = str(extra.get("family", values.get("family", DEFAULT_FAMILY)))
    family_for(name)  # an unknown family fails here, naming the known ones
    cfg = TrainConfig(family=name)
    try:
        _fill(cfg, values)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}" if source else str(exc)) from None
    _fill(cfg, extra)
    validate(cfg)
    return cfg


def validate(cfg: TrainConfig) -> None:
    """Reject values that would fail late (mid-run) or silently train the wrong thing."""
    family = family_of(cfg)
    check(cfg.stage in family.stages,
          f"stage must be one of {family.stages} (training stages of family {family.name}), not {cfg.stage!r}")
    check(cfg.precision in PRECISIONS,
          f"precision must be one of {PRECISIONS} (fp16 is GPU-only and unsupported), not {cfg.precision!r}")
    check(cfg.steps >= 1, "steps must be >= 1")
    check(cfg.checkpoint_every >= 1 and cfg.log_every >= 1, "checkpoint_every and log_every must be >= 1")
    check(cfg.keep_checkpoints >= 1, "keep_checkpoints must be >= 1")
    d = cfg.data
    check(d.frames >= 1 and d.batch_size >= 1 and d.grad_accum >= 1, "data.frames, batch_size, grad_accum must be >= 1")
    check(d.height > 0 and d.width > 0, f"data.height and data.width must be positive, got {d.height}x{d.width}")
    check(d.posterior in ("sample", "mode"), f"data.posterior must be 'sample' or 'mode', not {d.posterior!r}")
    check(cfg.noise.p_std > 0 and math.isfinite(cfg.noise.p_mean), "noise.p_std must be > 0")
    o = cfg.optim
    check(o.lr > 0 and o.grad_clip >= 0 and o.warmup_steps >= 0, "optim.lr must be > 0, grad_clip and warmup_steps >= 0")
    check(o.name in OPTIMIZERS, f"optim.name must be one of {OPTIMIZERS}, not {o.name!r}")
    check(len(o.betas) == 2 and all(0 <= b < 1 for b in o.betas), "optim.betas must be two numbers in [0, 1)")
    check(0.0 < cfg.ema.decay < 1.0, "ema.decay must be in (0, 1)")
    check(cfg.lora.rank >= 0, "lora.rank must be >= 0")
    check_validation(cfg)
    family.validate(cfg)


def dump_yaml(cfg: TrainConfig) -> str:
    import yaml

    values = cfg.to_dict()
    values["optim"]["betas"] = list(values["optim"]["betas"])
    values["validation"]["sigmas"] = list(values["validation"]["sigmas"])
    return yaml.safe_dump(values, sort_keys=False)
