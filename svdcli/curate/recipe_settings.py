"""What every recipe stage accepts, checked before any stage runs (`load_recipe` calls these).

Names and types come from each stage's own settings: the config dataclass of the scoring
stages (`MotionConfig`, `TextConfig`, `ClipConfig`, `CaptionConfig`), the parameters of
`cuts_config` (the builder `svd curate cuts` uses) for cuts, and `rules` for filter. The
configs carry no ranges, so `BOUNDS` holds them, in the filter rule grammar; they are the
bounds the `svd curate STAGE` options put on the same settings (motion's Farneback settings
have no options: there, OpenCV's limits). A test checks that every numeric setting has one
(or is listed in `UNBOUNDED`).
After names, types and bounds, each stage's own value checks run (cuts levels, caption lengths,
text frames), so a recipe that loads is one every stage accepts.
"""
from __future__ import annotations

import types
import typing
from typing import Any

from svdcli.errors import SvdError

CONFIGS = {"motion": "MotionConfig", "text": "TextConfig", "clip": "ClipConfig", "caption": "CaptionConfig"}

BOUNDS: dict[str, list[str]] = {
    "cuts": ["min_scene_len >= 0", "merge_tolerance >= 0", "trim >= 0", "min_length >= 0", "max_length >= 0"],
    "motion": ["long_side >= 16", "interval > 0", "margin_frames >= 0", "pyr_scale > 0", "pyr_scale < 1",
               "levels >= 1", "winsize >= 1", "iterations >= 1", "poly_n >= 1", "poly_sigma > 0"],
    "text": ["size >= 64", "batch_size >= 0"],
    "clip": ["batch_size >= 1"],
    "caption": ["seq_len >= 2", "min_seq_len >= 1", "num_beams >= 1", "num_beam_groups >= 1", "top_k >= 1",
                "top_p >= 0", "top_p <= 1", "temperature >= 0", "repetition_penalty >= 0", "batch_size >= 1"],
}
UNBOUNDED = {"caption": ["seed"]}  # numeric settings that take any value
_KINDS = {int: "an integer", float: "a number", str: "a string", bool: "true or false", type(None): "null"}


class RecipeError(SvdError):
    """A recipe that cannot be read or run as written; the message says what to change."""


def setting_types(stage: str) -> dict[str, Any]:
    """Setting name -> type (a type or a union of types) of a recipe stage."""
    import importlib

    from svdcli.curate.recipe import REGISTRY

    if stage == "filter":
        return {"rules": list}
    if stage == "cuts":
        from svdcli.curate.cuts import cuts_config

        hints = typing.get_type_hints(cuts_config)
        hints.pop("return", None)
        return hints
    return typing.get_type_hints(getattr(importlib.import_module(REGISTRY[stage][0]), CONFIGS[stage]))


def check_settings(stage: str, settings: dict, where: str) -> dict:
    """`settings` as the stage takes them; unknown names, wrong types and values out of bounds
    are refused with a message starting with `where`."""
    from svdcli.curate.filter import parse_rule

    known = setting_types(stage)
    bounds = [parse_rule(b) for b in BOUNDS.get(stage, [])]
    checked = {}
    for name, value in settings.items():
        if name not in known:
            raise RecipeError(f"{where}: stage {stage!r}: unknown setting {name!r}; "
                              f"its settings: {', '.join(known)}")
        if stage == "filter":
            _check_rules(value, where)
            checked[name] = value
            continue
        options = _options(known[name])
        value = _as_kind(options, value)
        if not any(_is_kind(kind, value) for kind in options):
            wanted = " or ".join(_KINDS.get(k, getattr(k, "__name__", str(k))) for k in options)
            raise RecipeError(f"{where}: {stage}.{name} must be {wanted}, not {value!r}")
        for bound in [b for b in bounds if b.column == name and value is not None]:
            if not bound.holds(value):
                raise RecipeError(f"{where}: {stage}.{name} = {value!r} is out of range: it must be "
                                  f"{bound.op} {bound.value:g}")
        checked[name] = value
    return checked


def _options(hint: Any) -> tuple:
    """The types a setting takes: (int,), (str, NoneType), ..."""
    union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    return typing.get_args(hint) if union else (hint,)


def _is_kind(kind: type, value: Any) -> bool:
    if isinstance(value, bool) and kind is not bool:
        return False  # YAML `true` is no number
    return isinstance(value, kind) or (kind is float and isinstance(value, int))


def _as_kind(options: tuple, value: Any) -> Any:
    """What YAML reads differently from how a number or a string is meant: '1e-3' (PyYAML's
    YAML 1.1 reads it as a string) for a number, 8 for a string such as cuts' levels."""
    if any(_is_kind(k, value) for k in options) or isinstance(value, bool):
        return value
    if float in options and isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    if str in options and isinstance(value, (int, float)):
        return str(value)
    return value


def _check_rules(rules: Any, where: str) -> None:
    from svdcli.curate.filter import parse_rule

    if not rules or not isinstance(rules, list) or not all(isinstance(r, str) for r in rules):
        raise RecipeError(f"{where}: filter.rules must be a non-empty list of rule strings, "
                           f"e.g. ['motion_score >= 0.25'], not {rules!r}")
    for rule in rules:
        try:
            parse_rule(rule)
        except SvdError as exc:
            raise RecipeError(f"{where}: filter.rules: {exc}") from None


def check_values(stage: str, settings: dict, where: str) -> None:
    """The stage's own checks of a complete set of settings (combinations, formats)."""
    if stage == "filter":
        _check_rules(settings.get("rules"), where)
    try:
        if stage == "cuts":
            from svdcli.curate.cuts import cuts_config

            cuts_config(**settings)
        elif stage == "caption":
            from svdcli.curate.caption import CaptionConfig

            CaptionConfig(**settings).check()
        elif stage == "text":
            from svdcli.curate.text import DETECTORS, TextConfig, parse_frames

            config = TextConfig(**settings)
            parse_frames(config.frames)
            if config.detector not in DETECTORS:
                raise SvdError(f"detector must be one of {', '.join(DETECTORS)}, not {config.detector!r}")
    except SvdError as exc:
        raise RecipeError(f"{where}: stage {stage!r}: {exc}") from None
