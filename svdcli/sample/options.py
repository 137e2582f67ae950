"""What one `svd sample` request asks for, and how it is completed from the model's defaults.

Common options (frames, steps, guidance, size, seed, sampler) are fields; anything else is a
family option (`SampleOptions(fps_id=2)` for SVD), which the checkpoint's family fills in and
checks (svdcli.families.base.Family.resolve_options).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Callable

from svdcli.errors import SvdError


@dataclass(init=False)
class SampleOptions:
    """One sampling request; None means the checkpoint's default."""

    frames: int | None = None
    steps: int | None = None
    min_cfg: float | None = None
    max_cfg: float | None = None
    seed: int = 0
    sampler: str | None = None
    width: int | None = None
    height: int | None = None
    family_options: dict = field(default_factory=dict)

    def __init__(self, frames: int | None = None, steps: int | None = None, min_cfg: float | None = None,
                 max_cfg: float | None = None, seed: int = 0, sampler: str | None = None,
                 width: int | None = None, height: int | None = None, **family_options):
        self.frames, self.steps, self.min_cfg, self.max_cfg = frames, steps, min_cfg, max_cfg
        self.seed, self.sampler, self.width, self.height = seed, sampler, width, height
        self.family_options = family_options


def check_frames(defaults, frames: int, warn: Callable[[str], None]) -> None:
    """Refuse what the model cannot do, warn about what it was not trained for."""
    if frames < 2:
        raise SvdError("--frames must be at least 2 (the first frame repeats the image)")
    trained = defaults.trained_frames
    if trained is None or frames == trained:
        return
    name = defaults.name or "this checkpoint"
    if frames > 2 * trained:
        raise SvdError(f"--frames {frames} is more than twice the {trained} frames "
                       f"{name} was trained on; the temporal layers do not "
                       f"extrapolate that far (use --frames {trained}, or a model trained longer)")
    warn(f"note: {name} was trained on {trained}-frame clips; {frames} frames may look worse")


def with_overrides(defaults, **kw):
    """`defaults` with every given (not None) value in place of its own."""
    return dataclasses.replace(defaults, **{k: v for k, v in kw.items() if v is not None})


def check_sampler(name: str, family=None) -> None:
    """Refuse a sampler `family` does not run (with no family: one that no registered family runs)."""
    from svdcli.families import family_for, names

    known = family.sampler_names if family is not None else tuple(
        dict.fromkeys(n for f in names() for n in family_for(f).sampler_names))
    if name not in known:
        whose = f"family {family.name}" if family is not None else "any model family"
        raise SvdError(f"unknown --sampler {name!r} for {whose}; choose one of {', '.join(known)}")


def resolve(options: SampleOptions, model, image, warn: Callable[[str], None]) -> SampleOptions:
    """Every None filled from the model's defaults, the family options filled by its family, and
    what the model cannot do refused. `model` is a svdcli.families.base.LoadedModel."""
    from svdcli.families.image import fit_size

    family = model.family
    base = family.sampling_defaults(model, options.family_options)
    d = with_overrides(base, frames=options.frames, steps=options.steps, min_cfg=options.min_cfg,
                       max_cfg=options.max_cfg)
    check_frames(base, d.frames, warn)
    sampler = options.sampler or d.sampler
    check_sampler(sampler, family)
    width, height = fit_size(options.width or d.width, options.height or d.height, d.size_multiple)
    if (options.width and width != options.width) or (options.height and height != options.height):
        warn(f"note: sizes must be multiples of {d.size_multiple}; sampling at {width}x{height}")
    extra = family.resolve_options(model, options.family_options, image, warn)
    return SampleOptions(frames=d.frames, steps=d.steps, min_cfg=d.min_cfg, max_cfg=d.max_cfg, seed=options.seed,
                         sampler=sampler, width=width, height=height, **extra)
