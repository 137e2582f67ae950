"""The Tune-A-Video family's keys of a training config (beside the generic ones in a recipe)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from svdcli.typed_config import check, field_names, fill

PREDICTIONS = ("auto", "edm", "v", "eps")
ATTENTION = ("sparse_causal", "full")


@dataclass
class TAVConfig:
    """Which image model is inflated and tuned, on which text."""

    base: str = ""                # image model: our `--stage image` export / run dir, or an SD 2.1 file
    prompt: str = ""              # the source video's text (Tune-A-Video's T)
    prediction: str = "auto"      # the base's parametrisation: auto (ours: edm; SD 2.1: v), edm, v, eps
    text: str = "auto"            # text encoder: auto (the base's own), or tiny (seeded random, tests)
    attention: str = "sparse_causal"   # ST-Attn, or full spatio-temporal attention (the baseline)
    frame_stride: int = 2         # every n-th frame of the clip: `svd tune` packs, `--invert` reads so (official: 2)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "TAVConfig":
        cfg = cls()
        fill(cfg, {k: v for k, v in values.items() if k in field_names(cls)})
        return cfg


def validate(cfg) -> None:
    own: TAVConfig = cfg.family_config
    check(bool(own.base), "base: the image checkpoint to inflate is required (svd tune --base)")
    check(bool(own.prompt), "prompt: the source video's text is required (svd tune --prompt)")
    check(own.prediction in PREDICTIONS, f"prediction must be one of {PREDICTIONS}, not {own.prediction!r}")
    check(own.attention in ATTENTION, f"attention must be one of {ATTENTION}, not {own.attention!r}")
    check(own.text in ("auto", "tiny"), f"text must be auto or tiny, not {own.text!r}")
    check(own.frame_stride >= 1, f"frame_stride must be >= 1, not {own.frame_stride}")
    check(cfg.lora.rank == 0, "tune_a_video tunes its own layers: lora.rank must be 0")
    check(cfg.data.frames >= 2, "data.frames must be >= 2 (a video)")
    d = cfg.data
    check(d.height % 64 == 0 and d.width % 64 == 0,
          f"data.height and data.width must be multiples of 64, got {d.height}x{d.width}")
