"""What one `svd sample` request asks for, and how it is completed from the model's defaults.

Common options (frames, steps, guidance, size, seed, sampler) are fields; anything else is a
family option (`SampleOptions(fps_id=2)` for SVD): asked for by name, then parsed into the
checkpoint's family's typed options (its `Options`, svdcli.families.options), completed and
checked by that family (svdcli.families.base.Family.resolve_options).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Callable

from svdcli.errors import SvdError
from svdcli.families.options import FamilyOptions


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
    # EDM's stochastic churn (Karras et al. 2022, Alg. 2) in the Euler / Heun samplers; 0: none
    s_churn: float = 0.0
    s_tmin: float = 0.0
    s_tmax: float = math.inf
    s_noise: float = 1.0
    # asked: a dict of option names; resolved (`resolve`): the family's typed options
    family_options: dict | FamilyOptions = field(default_factory=dict)

    def __init__(self, frames: int | None = None, steps: int | None = None, min_cfg: float | None = None,
                 max_cfg: float | None = None, seed: int = 0, sampler: str | None = None,
                 width: int | None = None, height: int | None = None, s_churn: float = 0.0, s_tmin: float = 0.0,
                 s_tmax: float = math.inf, s_noise: float = 1.0, **family_options):
        self.frames, self.steps, self.min_cfg, self.max_cfg = frames, steps, min_cfg, max_cfg
        self.seed, self.sampler, self.width, self.height = seed, sampler, width, height
        self.s_churn, self.s_tmin, self.s_tmax, self.s_noise = s_churn, s_tmin, s_tmax, s_noise
        self.family_options = family_options

    @classmethod
    def resolved(cls, family_options: FamilyOptions, **common) -> "SampleOptions":
        """Options whose family options are already the family's typed, resolved ones."""
        opts = cls(**common)
        opts.family_options = family_options
        return opts


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


def check_churn(options: SampleOptions, family) -> None:
    """EDM's churn settings in range, and a family whose sampling runs the Euler / Heun samplers."""
    if not options.s_churn >= 0:
        raise SvdError(f"--s-churn must be >= 0 (0: no churn), not {options.s_churn:g}")
    if not options.s_noise > 0:
        raise SvdError(f"--s-noise must be > 0, not {options.s_noise:g}")
    if not options.s_tmin <= options.s_tmax:
        raise SvdError(f"--s-tmin {options.s_tmin:g} is above --s-tmax {options.s_tmax:g}: no step would churn")
    if options.s_churn > 0 and not family.takes_churn:
        raise SvdError(f"--s-churn: family {family.name} samples with its own loop; EDM's churn runs in the "
                       "Euler and Heun samplers of svd checkpoints")


def resolve(options: SampleOptions, model, image, warn: Callable[[str], None]) -> SampleOptions:
    """Every None filled from the model's defaults, the family options filled by its family, and
    what the model cannot do refused. `model` is a svdcli.families.base.LoadedModel."""
    from svdcli.families.image import fit_size

    family = model.family
    asked = options.family_options
    own = asked if isinstance(asked, FamilyOptions) else family.parse_options(asked)
    base = family.sampling_defaults(model, own)
    d = with_overrides(base, frames=options.frames, steps=options.steps, min_cfg=options.min_cfg,
                       max_cfg=options.max_cfg)
    check_frames(base, d.frames, warn)
    sampler = options.sampler or d.sampler
    check_sampler(sampler, family)
    check_churn(options, family)
    width, height = fit_size(options.width or d.width, options.height or d.height, d.size_multiple)
    if (options.width and width != options.width) or (options.height and height != options.height):
        warn(f"note: sizes must be multiples of {d.size_multiple}; sampling at {width}x{height}")
    own = family.resolve_options(model, own, image, warn)
    return SampleOptions.resolved(own, frames=d.frames, steps=d.steps, min_cfg=d.min_cfg, max_cfg=d.max_cfg,
                                  seed=options.seed, sampler=sampler, width=width, height=height,
                                  s_churn=options.s_churn, s_tmin=options.s_tmin, s_tmax=options.s_tmax,
                                  s_noise=options.s_noise)
