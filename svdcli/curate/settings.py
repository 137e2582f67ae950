"""A stage's settings as a typed dataclass: recipe keys, command-line options, bounds and help in one place.

    @dataclass
    class TextConfig:
        frames: str = setting("fml", "'fml' = first, middle, last frame; or a rate such as '1fps'.")
        size: int = setting(640, "Long side of the analysis frames, pixels.", ge=64)
        model_dir: str | None = setting(None, "Folder with craft_mlt_25k.pth.", path=True)
        margin: int = setting(2, ge=0, option=False)  # a recipe key with no command-line option

A field is a recipe key (its name, type and default); made with `setting`, it also says its
bounds (`ge`, `gt`, `le`, `lt`: the recipe checks them, in the filter rule grammar, see
`bounds`) and, unless `option=False`, the `svd curate STAGE` option it becomes
(`--model-dir`, with the help text, the bounds as the option's min/max, and `path=True` for an
option read as a path and passed on as a string). `svdcli/cli/curate_cmds/stage_command.py`
builds the command from it. Light: dataclasses only, so the CLI reads it at start-up.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

DEVICE_HELP = "auto (GPU when present) | cpu | cuda[:N]."
PRETRAINED_HELP = "open_clip pretrained tag, or a checkpoint file."
_OPS = (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"))


def setting(default: Any, help: str = "", *, ge: float | None = None, gt: float | None = None,  # noqa: A002
            le: float | None = None, lt: float | None = None, option: bool = True, path: bool = False) -> Any:
    """A settings field: default, the option's help text, bounds, whether it is a command-line option."""
    bounds = {k: v for k, v in (("ge", ge), ("gt", gt), ("le", le), ("lt", lt)) if v is not None}
    return dataclasses.field(default=default, metadata={"help": help, "bounds": bounds, "option": option,
                                                        "path": path})


@dataclass(frozen=True)
class SettingOption:
    """One command-line option of a stage, from its settings field."""

    name: str  # the field's name; the flag is --name-with-dashes
    type: Any  # the field's type as written ('int', 'str | None', ...)
    default: Any
    help: str
    min: float | None
    max: float | None
    min_open: bool
    max_open: bool
    path: bool


def bounds(config: type) -> tuple[str, ...]:
    """The bounds of a settings dataclass's fields, as filter rules ('size >= 64'), in field order."""
    if not dataclasses.is_dataclass(config):
        return ()
    return tuple(f"{f.name} {op} {f.metadata['bounds'][key]:g}" for f in dataclasses.fields(config)
                 for key, op in _OPS if key in f.metadata.get("bounds", {}))


def options(config: type) -> list[SettingOption]:
    """The command-line options of a settings dataclass: its `setting` fields with option=True."""
    if not dataclasses.is_dataclass(config):
        return []
    out = []
    for f in dataclasses.fields(config):
        if not f.metadata.get("option"):
            continue
        b = f.metadata["bounds"]
        typ = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))  # 'str | None'
        out.append(SettingOption(f.name, typ, f.default, f.metadata["help"], b.get("ge", b.get("gt")),
                                 b.get("le", b.get("lt")), "gt" in b, "lt" in b, f.metadata["path"]))
    return out
