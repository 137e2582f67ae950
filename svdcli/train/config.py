"""Typed training configuration: dataclasses filled from a stage YAML and `key=value` overrides.

The resolved config is written to `RUN_DIR/config.yaml` and inside every checkpoint, so a run
can be resumed or reproduced from its own files. Every field is validated here, before any
model is built, so a typo in a recipe fails in a second with a message naming the key.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from svdcli.errors import SvdError

STAGES = ("image", "video", "finetune")
COND_MODES = ("i2v", "t2v", "none")
PRECISIONS = ("bf16", "fp32")
MODEL_PRESETS = ("tiny", "svd")


class ConfigError(SvdError):
    """A training config that does not load or does not validate."""


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


@dataclass
class CondConfig:
    mode: str = "i2v"         # i2v: first-frame image conditioning; t2v: captions; none
    dropout: float = 0.1      # prob. of zeroing crossattn/concat (and the text) for CFG
    cond_aug_p_mean: float = -3.0  # ln cond_aug ~ N(p_mean, p_std^2): noise on the cond frame
    cond_aug_p_std: float = 0.5
    text_dropout: float = 0.15     # t2v only (SVD video pretraining: 15%)


@dataclass
class OptimConfig:
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
    target: str = "temporal_attention"


@dataclass
class TrainConfig:
    stage: str = "video"
    model: str = "tiny"       # UNetConfig preset: tiny (tests, CPU) or svd (the paper's size)
    weights: str = ""         # svd: official SVD .safetensors supplying the VAE and CLIP image tower
    steps: int = 1000
    seed: int = 0
    precision: str = "bf16"
    freeze_spatial: bool = False   # Video LDM: train only the temporal layers
    activation_checkpointing: bool = False
    checkpoint_every: int = 500
    log_every: int = 10
    keep_checkpoints: int = 3
    data: DataConfig = field(default_factory=DataConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    cond: CondConfig = field(default_factory=CondConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    ema: EMAConfig = field(default_factory=EMAConfig)
    lora: LoRAConfig = field(default_factory=LoRAConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def frames(self) -> int:
        """Frames per sample as trained: the image stage trains on single frames."""
        return 1 if self.stage == "image" else self.data.frames


def _coerce(value: Any, typ: Any, key: str) -> Any:
    """Convert a YAML / command-line value to the field's declared type, or fail naming `key`."""
    typ = typ if isinstance(typ, str) else getattr(typ, "__name__", str(typ))
    try:
        if typ == "bool":
            if isinstance(value, str):
                if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(value)
                return value.lower() in ("true", "1", "yes")
            return bool(value)
        if typ == "int":
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(float(value)) if isinstance(value, str) else int(value)
        if typ == "float":
            return float(value)
        if typ == "str":
            return str(value)
        if typ.startswith("tuple"):
            items = value.strip("()[] ").split(",") if isinstance(value, str) else list(value)
            return tuple(float(v) for v in items)
    except (TypeError, ValueError):
        raise ConfigError(f"config key {key!r}: cannot read {value!r} as {typ}") from None
    raise ConfigError(f"config key {key!r}: unsupported type {typ}")


def _fill(obj: Any, values: dict, prefix: str = "") -> None:
    """Set dataclass fields of `obj` from a nested dict; unknown keys are errors, not ignored."""
    by_name = {f.name: f for f in fields(obj)}
    for key, value in values.items():
        path = f"{prefix}{key}"
        if key not in by_name:
            known = ", ".join(sorted(by_name))
            raise ConfigError(f"unknown config key {path!r} (known here: {known})")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"config key {path!r} must be a mapping")
            _fill(current, value, prefix=f"{path}.")
        else:
            setattr(obj, key, _coerce(value, by_name[key].type, path))


def parse_overrides(items: list[str]) -> dict:
    """`["optim.lr=3e-5", "steps=50"]` -> nested dict, values still strings (typed by _fill)."""
    out: dict = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value (e.g. optim.lr=3e-5)")
        key, value = item.split("=", 1)
        node = out
        *parents, leaf = key.strip().split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value.strip()
    return out


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def read_yaml(path: Path) -> dict:
    """The top-level mapping of a YAML config file, or ConfigError naming the file."""
    import yaml

    if path.is_dir():
        raise ConfigError(f"{path} is a folder, not a YAML config file")
    if not path.is_file():
        raise ConfigError(f"training config not found: {path}")
    try:
        values = yaml.safe_load(path.read_text())
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text (YAML) file") from None
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"{path}: not valid YAML ({first})") from None
    if values is None:
        raise ConfigError(f"{path} is empty: expected a mapping of config keys")
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys at the top level, "
                          f"not a {type(values).__name__}")
    return values


def load_config(path: str | Path | None, overrides: list[str] = (), stage: str | None = None) -> TrainConfig:
    """Read a stage YAML, apply overrides (and `stage`, which must agree with the YAML), validate."""
    values = read_yaml(Path(path)) if path is not None else {}
    if stage is not None:
        if "stage" in values and values["stage"] != stage:
            raise ConfigError(f"--stage {stage} but {path} is a {values['stage']!r} config")
        values["stage"] = stage
    return config_from_dict(values, overrides, source=path)


def config_from_dict(values: dict, overrides: list[str] = (), source: str | Path | None = None) -> TrainConfig:
    """A validated config from `values` (a recipe, or one saved in a run dir) and `key=value`
    overrides; an error in `values` names `source`, the file they came from."""
    cfg = TrainConfig()
    try:
        _fill(cfg, values)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}" if source else str(exc)) from None
    _fill(cfg, parse_overrides(list(overrides)))
    validate(cfg)
    return cfg


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def validate(cfg: TrainConfig) -> None:
    """Reject values that would fail late (mid-run) or silently train the wrong thing."""
    _check(cfg.stage in STAGES, f"stage must be one of {STAGES}, not {cfg.stage!r}")
    _check(cfg.model in MODEL_PRESETS, f"model must be one of {MODEL_PRESETS}, not {cfg.model!r}")
    _check(cfg.precision in PRECISIONS,
           f"precision must be one of {PRECISIONS} (fp16 is GPU-only and unsupported), not {cfg.precision!r}")
    _check(cfg.cond.mode in COND_MODES, f"cond.mode must be one of {COND_MODES}, not {cfg.cond.mode!r}")
    _check(cfg.steps >= 1, "steps must be >= 1")
    _check(cfg.checkpoint_every >= 1 and cfg.log_every >= 1, "checkpoint_every and log_every must be >= 1")
    _check(cfg.keep_checkpoints >= 1, "keep_checkpoints must be >= 1")
    d = cfg.data
    _check(d.frames >= 1 and d.batch_size >= 1 and d.grad_accum >= 1, "data.frames, batch_size, grad_accum must be >= 1")
    # the VAE downsamples by 8 and the UNet's three downsamplers by 8 more: latents must halve cleanly
    _check(d.height % 64 == 0 and d.width % 64 == 0 and d.height > 0 and d.width > 0,
           f"data.height and data.width must be positive multiples of 64 (VAE factor 8 x three UNet "
           f"downsamplings), got {d.height}x{d.width}")
    _check(d.posterior in ("sample", "mode"), f"data.posterior must be 'sample' or 'mode', not {d.posterior!r}")
    _check(cfg.noise.p_std > 0 and math.isfinite(cfg.noise.p_mean), "noise.p_std must be > 0")
    _check(0.0 <= cfg.cond.dropout < 1.0 and 0.0 <= cfg.cond.text_dropout < 1.0,
           "cond.dropout and cond.text_dropout must be in [0, 1)")
    _check(cfg.cond.cond_aug_p_std > 0, "cond.cond_aug_p_std must be > 0")
    o = cfg.optim
    _check(o.lr > 0 and o.grad_clip >= 0 and o.warmup_steps >= 0, "optim.lr must be > 0, grad_clip and warmup_steps >= 0")
    _check(len(o.betas) == 2 and all(0 <= b < 1 for b in o.betas), "optim.betas must be two numbers in [0, 1)")
    _check(0.0 < cfg.ema.decay < 1.0, "ema.decay must be in (0, 1)")
    _check(cfg.lora.rank >= 0, "lora.rank must be >= 0")
    _check(cfg.lora.target == "temporal_attention", "lora.target: only 'temporal_attention' is supported")
    if cfg.lora.rank and cfg.freeze_spatial:
        raise ConfigError("lora.rank > 0 already trains only the LoRA weights; drop freeze_spatial")
    if cfg.stage == "image":
        _check(not cfg.freeze_spatial, "the image stage trains the spatial layers: freeze_spatial must be false")
        _check(cfg.lora.rank == 0, "LoRA targets temporal attention, which the image stage does not train")
        _check(cfg.cond.mode != "i2v", "the image stage cannot condition on its own first frame: use cond.mode t2v or none")


def dump_yaml(cfg: TrainConfig) -> str:
    import yaml

    values = cfg.to_dict()
    values["optim"]["betas"] = list(values["optim"]["betas"])
    return yaml.safe_dump(values, sort_keys=False)
