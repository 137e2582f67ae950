"""Typed dataclass configs filled from YAML mappings and `key=value` overrides.

One filler for every config that a recipe and the command line set: the training config
(svdcli.train.config) and each model family's own keys (svdcli.families). Unknown keys are
errors naming the key, never ignored; values are converted to the field's declared type.
"""
from __future__ import annotations

import dataclasses
from dataclasses import fields
from pathlib import Path
from typing import Any

from svdcli.errors import SvdError


class ConfigError(SvdError):
    """A config that does not load or does not validate."""


def check(ok: bool, message: str) -> None:
    """Raise ConfigError(message) unless `ok`."""
    if not ok:
        raise ConfigError(message)


def coerce(value: Any, typ: Any, key: str) -> Any:
    """Convert a YAML / command-line value to the field's declared type, or fail naming `key`.

    Types are read as written in the dataclass (`from __future__ import annotations`): bool,
    int, float, str, Path, tuple, list, Any, and any of them `| None` (None kept as is).
    """
    typ = typ if isinstance(typ, str) else getattr(typ, "__name__", str(typ))
    if typ.endswith(" | None"):
        if value is None:
            return None
        typ = typ[: -len(" | None")]
    if typ == "Any":
        return value
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
        if typ == "Path":
            return Path(value)
        if typ == "list":
            if isinstance(value, (str, bytes)):
                raise ValueError(value)
            return list(value)
        if typ.startswith("tuple"):
            items = value.strip("()[] ").split(",") if isinstance(value, str) else list(value)
            return tuple(float(v) for v in items)
    except (TypeError, ValueError):
        raise ConfigError(f"config key {key!r}: cannot read {value!r} as {typ}") from None
    raise ConfigError(f"config key {key!r}: unsupported type {typ}")


def fill(obj: Any, values: dict, prefix: str = "") -> None:
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
            fill(current, value, prefix=f"{path}.")
        else:
            setattr(obj, key, coerce(value, by_name[key].type, path))


def field_names(obj_or_type: Any) -> list[str]:
    return [f.name for f in fields(obj_or_type)]


class RecipeKeys:
    """Base of a family's config dataclass, whose fields sit at the top level of a training
    recipe beside the generic keys: `to_dict`, and `from_dict` reading its own keys out of a
    whole config (the generic ones are left to it)."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict):
        cfg = cls()
        fill(cfg, {k: v for k, v in values.items() if k in field_names(cls)})
        return cfg


def parse_overrides(items: list[str]) -> dict:
    """`["optim.lr=3e-5", "steps=50"]` -> nested dict, values still strings (typed by `fill`)."""
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


def read_yaml(path: Path, what: str = "training config") -> dict:
    """The top-level mapping of a YAML config file, or ConfigError naming the file."""
    import yaml

    if path.is_dir():
        raise ConfigError(f"{path} is a folder, not a YAML config file")
    if not path.is_file():
        raise ConfigError(f"{what} not found: {path}")
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
