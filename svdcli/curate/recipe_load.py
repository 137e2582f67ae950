"""Reading a recipe, and checking every setting in it before any stage runs.

`load_recipe` reads the file, applies the `--set` overrides and refuses, in one line naming the
file (or the --set) and the key: a file that is no mapping, unknown or mistyped top-level keys,
unknown stages, a stage value that is no mapping, and for every stage unknown setting names,
wrong types, values out of range, then the stage's own checks (cuts levels, caption lengths,
text frames, devices). A recipe that loads is one every stage accepts.

Names and types come from each stage's own settings: the config dataclass of the scoring
stages (`MotionConfig`, `TextConfig`, `ClipConfig`, `CaptionConfig`), the parameters of
`cuts_config` (the builder `svd curate cuts` uses) for cuts, and `rules` for filter. The
configs carry no ranges, so `BOUNDS` holds them, in the filter rule grammar; they are the
bounds the `svd curate STAGE` options put on the same settings (motion's Farneback settings
have no options: there, OpenCV's limits). Tests check that every numeric setting has one (or is
listed in `UNBOUNDED`) and that they agree with the commands' options.
"""
from __future__ import annotations

import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from svdcli.errors import SvdError
from svdcli.manifest.schema import STAGE_ORDER


class RecipeError(SvdError):
    """A recipe that cannot be read or run as written; the message says what to change."""


@dataclass
class Recipe:
    """A parsed recipe: stage name -> settings, in run order, plus run-wide options."""

    name: str
    stages: dict[str, dict[str, Any]]
    workers: int = 1
    report: bool = True
    source: str = ""


# --- reading ----------------------------------------------------------------------------------
TOP_LEVEL = {"name": "a name", "workers": "an integer >= 1", "report": "true or false", "stages": "a mapping"}


def load_recipe(path: Path, overrides: list[str] = ()) -> Recipe:
    """Read a recipe file and apply `--set stage.key=value` overrides (values parsed as YAML).

    Every setting is checked here (names, types, ranges, each stage's own checks), so a bad
    recipe or override fails before any stage runs.
    """
    path = Path(path)
    recipe = _parse(_read(path), path)
    for stage, settings in recipe.stages.items():
        if _available(stage):
            recipe.stages[stage] = check_settings(stage, settings, str(path))
    for item in overrides:
        _override(recipe, item)
    _check_order(recipe)
    where = str(path) + (" with --set " + " ".join(overrides) if overrides else "")
    for stage, settings in recipe.stages.items():
        if _available(stage):
            check_values(stage, settings, where)
    return recipe


def _read(path: Path) -> dict:
    import yaml

    if not path.is_file():
        raise RecipeError(f"recipe not found: {path} (see pipelines/lvd-f.yaml for an example)")
    try:
        raw = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise RecipeError(f"{path} is not valid YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(raw, dict):
        found = "it is empty" if raw is None else f"not a {type(raw).__name__}"
        raise RecipeError(f"{path}: a recipe maps {', '.join(TOP_LEVEL)} to their values "
                          f"(see docs/recipes.md); {found}")
    unknown = set(raw) - set(TOP_LEVEL)
    if unknown:
        raise RecipeError(f"{path}: unknown top-level keys {sorted(unknown)}; expected {', '.join(TOP_LEVEL)}")
    return raw


def _parse(raw: dict, path: Path) -> Recipe:
    """The recipe a file's mapping describes, with its top-level values and stage names checked."""
    stages = raw.get("stages")
    if not isinstance(stages, dict) or not stages:
        raise RecipeError(f"{path}: 'stages' must map stage names to their settings, e.g. 'motion: {{}}'")
    for stage, settings in stages.items():
        if stage not in STAGE_ORDER:
            raise RecipeError(f"{path}: unknown stage {stage!r}; stages are {', '.join(STAGE_ORDER)}")
        if not isinstance(settings, (dict, type(None))):
            raise RecipeError(f"{path}: stage {stage!r} must map its settings to values "
                              f"(e.g. '{stage}: {{}}' for the defaults), not {settings!r}")
    recipe = Recipe(path.stem, {k: dict(v or {}) for k, v in stages.items()}, source=str(path))
    for key in ("name", "workers", "report"):
        if key in raw:
            _set_top_level(recipe, key, raw[key], str(path))
    return recipe


def _set_top_level(recipe: Recipe, key: str, value: Any, where: str) -> None:
    ok = {"name": isinstance(value, (str, int, float)) and not isinstance(value, bool),
          "workers": isinstance(value, int) and not isinstance(value, bool) and value >= 1,
          "report": isinstance(value, bool)}[key]
    if not ok:
        raise RecipeError(f"{where}: {key!r} must be {TOP_LEVEL[key]}, not {value!r}")
    setattr(recipe, key, str(value) if key == "name" else value)


def _override(recipe: Recipe, item: str) -> None:
    """Apply one `--set STAGE.SETTING=VALUE` (or `workers=N`, `report=false`), checked."""
    import yaml

    key, sep, text = item.partition("=")
    stage, dot, setting = key.strip().partition(".")
    top_level = sep and not dot and stage in ("workers", "report")
    if not top_level and not (sep and dot and setting):
        raise RecipeError(f"--set {item!r}: expected STAGE.SETTING=VALUE (e.g. motion.margin_frames=3), "
                          "or workers=N, report=false")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        problem = str(exc).splitlines()[0]
        raise RecipeError(f"--set {item!r}: {text!r} is not a YAML value ({problem}); "
                          "quote strings and lists, e.g. --set \"filter.rules=['motion_score >= 0.5']\"") from None
    if top_level:
        return _set_top_level(recipe, stage, value, f"--set {item!r}")
    if stage not in recipe.stages:
        raise RecipeError(f"--set {item!r}: the recipe has no stage {stage!r} (it has {list(recipe.stages)})")
    if _available(stage):
        value = check_settings(stage, {setting: value}, f"--set {item!r}")[setting]
    recipe.stages[stage][setting] = value


def _check_order(recipe: Recipe) -> None:
    names, where = list(recipe.stages), recipe.source or "the recipe"
    if "cuts" in names and names[0] != "cuts":
        raise RecipeError(f"{where}: 'cuts' makes the clips, so it must be the first stage")
    if "filter" in names and names[-1] != "filter":
        raise RecipeError(f"{where}: 'filter' must be the last stage: it needs every score")
    if "clip" in names and "caption" in names and names.index("caption") > names.index("clip"):
        raise RecipeError(f"{where}: 'caption' must come before 'clip': clip_score compares frames with the caption")


def _available(stage: str) -> bool:
    from svdcli.curate.recipe import available

    return available(stage)


# --- the settings of every stage --------------------------------------------------------------
CONFIGS = {"motion": "MotionConfig", "text": "TextConfig", "clip": "ClipConfig", "caption": "CaptionConfig"}

BOUNDS: dict[str, list[str]] = {
    "cuts": ["transnet_threshold > 0", "transnet_threshold < 1", "merge_tolerance >= 0", "trim >= 0", "min_length >= 0", "max_length >= 0"],
    "motion": ["long_side >= 16", "interval > 0", "margin_frames >= 0", "pyr_scale > 0", "pyr_scale < 1",
               "levels >= 1", "winsize >= 1", "iterations >= 1", "poly_n >= 1", "poly_sigma > 0"],
    "text": ["size >= 64", "batch_size >= 0"],
    "clip": ["batch_size >= 1"],
    "caption": ["seq_len >= 2", "min_seq_len >= 1", "num_beams >= 1", "num_beam_groups >= 1", "top_k >= 1",
                "top_p >= 0", "top_p <= 1", "temperature >= 0", "repetition_penalty >= 0", "batch_size >= 1"],
}
UNBOUNDED = {"caption": ["seed"]}  # numeric settings that take any value
_KINDS = {int: "an integer", float: "a number", str: "a string", bool: "true or false", type(None): "null"}


def setting_types(stage: str) -> dict[str, Any]:
    """Setting name -> type (a type or a union of types) of a recipe stage."""
    import importlib

    if stage == "filter":
        return {"rules": list}
    if stage == "cuts":
        from svdcli.curate.stages.cuts import cuts_config

        hints = typing.get_type_hints(cuts_config)
        hints.pop("return", None)
        return hints
    from svdcli.curate.recipe import REGISTRY

    return typing.get_type_hints(getattr(importlib.import_module(REGISTRY[stage][0]), CONFIGS[stage]))


def check_settings(stage: str, settings: dict, where: str) -> dict:
    """`settings` as the stage takes them; unknown names, wrong types and values out of bounds
    are refused with a message starting with `where`."""
    from svdcli.curate.stages.filter import parse_rule

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


def _is_kind(kind: Any, value: Any) -> bool:
    kind = typing.get_origin(kind) or kind  # list[str] -> list
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
    from svdcli.curate.stages.filter import parse_rule

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
    device = settings.get("device", "auto")
    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", str(device)):  # else every clip's model load fails
        raise RecipeError(f"{where}: {stage}.device must be auto, cpu, cuda or cuda:N, not {device!r}")
    try:
        if stage == "cuts":
            from svdcli.curate.stages.cuts import cuts_config

            cuts_config(**settings)
        elif stage == "caption":
            from svdcli.curate.stages.caption import CaptionConfig

            CaptionConfig(**settings).check()
        elif stage == "text":
            from svdcli.curate.stages.text import DETECTORS, TextConfig, parse_frames

            config = TextConfig(**settings)
            parse_frames(config.frames)
            if config.detector not in DETECTORS:
                raise SvdError(f"detector must be one of {', '.join(DETECTORS)}, not {config.detector!r}")
    except SvdError as exc:
        raise RecipeError(f"{where}: stage {stage!r}: {exc}") from None
