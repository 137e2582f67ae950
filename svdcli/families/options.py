"""A family's `svd sample` options as a typed dataclass, checked when a request is parsed.

    @dataclass
    class VDMOptions(FamilyOptions):
        extend: int | None = None                       # --extend
        conditioning: str = choice("reconstruction", "replacement")
        clip: Any = derived()                           # worked out by resolve_options

A request is a mapping of option names (what `SampleOptions(extend=3)` and the CLI's family
flags carry). `parse` refuses a name the family does not take, naming the ones it does,
converts every value to its field's type (`svdcli.typed_config.coerce`) and checks choices; a
value of None means the default. Fields made with `derived()` are not options: the family's
`resolve_options` fills them (the frames of an --input video, loaded LoRAs). No torch here.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from svdcli.errors import SvdError
from svdcli.typed_config import ConfigError, coerce


def derived(default: Any = None) -> Any:
    """A field `resolve_options` works out from the options; never read from a request."""
    return field(default=default, compare=False, repr=False, metadata={"derived": True})


def choice(default: str, *others: str) -> Any:
    """An option whose value must be one of `default, *others`."""
    return field(default=default, metadata={"choices": (default, *others)})


def flag(name: str) -> str:
    """The command line's spelling of an option: fps_id -> --fps-id."""
    return "--" + name.replace("_", "-")


@dataclass
class FamilyOptions:
    """A family's sampling options (none, for a family that takes none). See the module docstring."""

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The options a request may set (the derived fields left out)."""
        return tuple(f.name for f in fields(cls) if not f.metadata.get("derived"))

    @classmethod
    def parse(cls, values: dict, family: str) -> "FamilyOptions":
        """The options of a request `values`, typed and checked; `family` names it in errors."""
        names = cls.names()
        unknown = sorted(set(values) - set(names))
        if unknown:
            takes = ", ".join(map(flag, names)) or "none"
            raise SvdError(f"family {family} takes no {flag(unknown[0])} (it takes: {takes})")
        out = cls()
        for f in fields(cls):
            value = values.get(f.name)
            if value is None or f.metadata.get("derived"):
                continue
            try:
                value = coerce(value, f.type, f.name)
            except ConfigError:
                typ = str(f.type).replace(" | None", "")
                raise SvdError(f"{flag(f.name)}: cannot read {value!r} as {typ}") from None
            choices = f.metadata.get("choices")
            if choices and value not in choices:
                raise SvdError(f"{flag(f.name)} must be {' or '.join(choices)}, not {value!r}")
            setattr(out, f.name, value)
        return out
