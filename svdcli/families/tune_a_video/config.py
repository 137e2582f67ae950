"""The Tune-A-Video family's keys of a training config (beside the generic ones in a recipe),
and its `svd sample` options."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from svdcli.families.options import FamilyOptions, derived
from svdcli.typed_config import RecipeKeys, check

PREDICTIONS = ("auto", "edm", "v", "eps")
ATTENTION = ("sparse_causal", "full")


@dataclass
class TAVConfig(RecipeKeys):
    """Which image model is inflated and tuned, on which text."""

    base: str = ""                # image model: our `--stage image` export / run dir, or an SD 2.1 file
    prompt: str = ""              # the source video's text (Tune-A-Video's T)
    prediction: str = "auto"      # the base's parametrisation: auto (ours: edm; SD 2.1: v), edm, v, eps
    text: str = "auto"            # text encoder: auto (the base's own), or tiny (seeded random, tests)
    attention: str = "sparse_causal"   # ST-Attn, or full spatio-temporal attention (the baseline)
    frame_stride: int = 2         # every n-th frame of the clip: `svd tune` packs, `--invert` reads so (official: 2)


@dataclass
class TAVOptions(FamilyOptions):
    """`svd sample --family tune_a_video` options: the edit and where it starts."""

    prompt: str | None = None        # the edited text (default: the tuned run's own prompt)
    tuned: Path | None = None        # a `svd tune` run folder or its delta file, applied to the base
    invert: Path | None = None       # start from the DDIM inversion of this video (default: noise)
    frame_stride: int = derived(1)   # --invert reads every n-th frame, as the run was tuned on it


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
