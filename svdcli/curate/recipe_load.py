"""Reading a recipe, and checking every setting in it before any stage runs.

`load_recipe` reads the file, applies the `--set` overrides and refuses, in one line naming the
file (or the --set) and the key: a file that is no mapping, unknown or mistyped top-level keys,
unknown stages, a stage value that is no mapping, and for every stage unknown setting names,
wrong types, values out of range, then the stage's own checks (cuts levels, caption lengths,
text frames, devices). A recipe that loads is one every stage accepts.

Everything about a stage comes from its spec (`svdcli/curate/stages/`): names and types from
its settings (`StageSpec.config`: the config dataclass of the scoring stages, the parameters of
`cuts_config`, the builder `svd curate cuts` uses, for cuts), ranges from `StageSpec.bounds`
(in the filter rule grammar: the bounds the `svd curate STAGE` options put on the same
settings), its own checks, and where it may sit in a recipe. Tests check that every numeric
setting has a bound (or is listed in `unbounded`) and that they agree with the commands' options.
"""
from __future__ import annotations

import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from svdcli.curate import stages as registry
from svdcli.curate.stage import SettingError
from svdcli.errors import SvdError


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
    executor: str = "local"              # where the stages run: local | ray (docs/scale.md)
    ray_address: str = "auto"
    resources: dict[str, dict[str, float]] = field(default_factory=dict)  # stage -> {num_cpus, num_gpus} on Ray
    max_error_rate: float = 1.0  # a stage with more failed inputs than this share fails the run (exit 1)


# --- reading ----------------------------------------------------------------------------------
TOP_LEVEL = {"name": "a name", "workers": "an integer >= 1", "report": "true or false", "stages": "a mapping",
             "executor": "local or ray", "ray_address": "auto or HOST:PORT",
             "resources": "a mapping of stage names to {num_cpus: N, num_gpus: N} (fractions allowed)",
             "max_error_rate": "a number from 0 to 1"}
RESOURCE_KEYS = ("num_cpus", "num_gpus")


def load_recipe(path: Path, overrides: list[str] = ()) -> Recipe:
    """Read a recipe file and apply `--set stage.key=value` overrides (values parsed as YAML).

    Every setting is checked here (names, types, ranges, each stage's own checks), so a bad
    recipe or override fails before any stage runs.
    """
    path = Path(path)
    recipe = _parse(_read(path), path)
    for stage, settings in recipe.stages.items():
        if registry.available(stage):
            recipe.stages[stage] = check_settings(stage, settings, str(path))
    for item in overrides:
        _override(recipe, item)
    _check_order(recipe)
    where = str(path) + (" with --set " + " ".join(overrides) if overrides else "")
    for stage, settings in recipe.stages.items():
        if registry.available(stage):
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
        if stage not in registry.NAMES:
            raise RecipeError(f"{path}: unknown stage {stage!r}; stages are {', '.join(registry.NAMES)}")
        if not isinstance(settings, (dict, type(None))):
            raise RecipeError(f"{path}: stage {stage!r} must map its settings to values "
                              f"(e.g. '{stage}: {{}}' for the defaults), not {settings!r}")
    recipe = Recipe(path.stem, {k: dict(v or {}) for k, v in stages.items()}, source=str(path))
    for key in ("name", "workers", "report", "executor", "ray_address", "resources", "max_error_rate"):
        if key in raw:
            _set_top_level(recipe, key, raw[key], str(path))
    return recipe


def _set_top_level(recipe: Recipe, key: str, value: Any, where: str) -> None:
    if key == "resources":
        value = _resources(value, where)
    ok = {"name": isinstance(value, (str, int, float)) and not isinstance(value, bool),
          "workers": isinstance(value, int) and not isinstance(value, bool) and value >= 1,
          "report": isinstance(value, bool),
          "executor": value in ("local", "ray"),
          "ray_address": isinstance(value, str) and bool(value.strip()),
          "resources": True,
          "max_error_rate": isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 1}[key]
    if not ok:
        raise RecipeError(f"{where}: {key!r} must be {TOP_LEVEL[key]}, not {value!r}")
    setattr(recipe, key, str(value) if key == "name" else value)


def _resources(value: Any, where: str) -> dict[str, dict[str, float]]:
    """`resources: {caption: {num_gpus: 0.5}}` checked: known stages, known keys, numbers >= 0
    (num_cpus > 0)."""
    if not isinstance(value, dict):
        raise RecipeError(f"{where}: 'resources' must be {TOP_LEVEL['resources']}, not {value!r}")
    checked = {}
    for stage, asks in value.items():
        if stage not in registry.NAMES:
            raise RecipeError(f"{where}: resources for unknown stage {stage!r}; stages are {', '.join(registry.NAMES)}")
        if not isinstance(asks, dict) or not asks or set(asks) - set(RESOURCE_KEYS):
            raise RecipeError(f"{where}: resources.{stage} must map {' and/or '.join(RESOURCE_KEYS)} to numbers, "
                              f"not {asks!r}")
        for key, number in asks.items():
            if isinstance(number, bool) or not isinstance(number, (int, float)) or number < 0 or (
                    key == "num_cpus" and number == 0):
                low = "> 0" if key == "num_cpus" else ">= 0"
                raise RecipeError(f"{where}: resources.{stage}.{key} must be a number {low}, not {number!r}")
        checked[stage] = {k: float(v) for k, v in asks.items()}
    return checked


def _override(recipe: Recipe, item: str) -> None:
    """Apply one `--set STAGE.SETTING=VALUE` (or `workers=N`, `report=false`), checked."""
    import yaml

    key, sep, text = item.partition("=")
    stage, dot, setting = key.strip().partition(".")
    top_level = sep and not dot and stage in ("workers", "report", "executor", "ray_address", "max_error_rate")
    if not top_level and not (sep and dot and setting):
        raise RecipeError(f"--set {item!r}: expected STAGE.SETTING=VALUE (e.g. motion.margin_frames=3), "
                          "or workers=N, report=false, executor=ray, ray_address=HOST:PORT, max_error_rate=0.1")
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
    if registry.available(stage):
        value = check_settings(stage, {setting: value}, f"--set {item!r}")[setting]
    recipe.stages[stage][setting] = value


def _check_order(recipe: Recipe) -> None:
    """Where each stage's spec says it must sit: first, last, after another stage."""
    names, where = list(recipe.stages), recipe.source or "the recipe"
    placed = [registry.spec(name) for name in registry.NAMES if name in names and registry.available(name)]
    for spec in placed:
        if spec.first and names[0] != spec.name:
            raise RecipeError(f"{where}: '{spec.name}' {spec.first}, so it must be the first stage")
    for spec in placed:
        if spec.last and names[-1] != spec.name:
            raise RecipeError(f"{where}: '{spec.name}' must be the last stage: {spec.last}")
    for spec in placed:
        for before, why in spec.after:
            if before in names and names.index(before) > names.index(spec.name):
                raise RecipeError(f"{where}: '{before}' must come before '{spec.name}': {why}")


# --- the settings of every stage --------------------------------------------------------------
_KINDS = {int: "an integer", float: "a number", str: "a string", bool: "true or false", type(None): "null"}


def setting_types(stage: str) -> dict[str, Any]:
    """Setting name -> type (a type or a union of types) of a recipe stage."""
    hints = typing.get_type_hints(registry.spec(stage).config)
    hints.pop("return", None)  # a builder function's
    return hints


def check_settings(stage: str, settings: dict, where: str) -> dict:
    """`settings` as the stage takes them; unknown names, wrong types and values out of bounds
    are refused with a message starting with `where`."""
    from svdcli.curate.stages.filter import parse_rule

    spec = registry.spec(stage)
    known = setting_types(stage)
    bounds = [parse_rule(b) for b in spec.bounds]
    checked = {}
    for name, value in settings.items():
        if name not in known:
            raise RecipeError(f"{where}: stage {stage!r}: unknown setting {name!r}; "
                              f"its settings: {', '.join(known)}")
        if spec.check_setting:
            checked[name] = _own_check(lambda: spec.check_setting(name, value), stage, where)
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


def check_values(stage: str, settings: dict, where: str) -> None:
    """The stage's own checks of a complete set of settings (combinations, formats)."""
    device = settings.get("device", "auto")
    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", str(device)):  # else every clip's model load fails
        raise RecipeError(f"{where}: {stage}.device must be auto, cpu, cuda or cuda:N, not {device!r}")
    check = registry.spec(stage).check
    if check:
        _own_check(lambda: check(settings), stage, where)


def _own_check(run, stage: str, where: str):
    """Run one of a stage's own checks; its SvdError becomes a RecipeError naming `where`."""
    try:
        return run()
    except SettingError as exc:  # names the setting itself
        raise RecipeError(f"{where}: {exc}") from None
    except SvdError as exc:
        raise RecipeError(f"{where}: stage {stage!r}: {exc}") from None
