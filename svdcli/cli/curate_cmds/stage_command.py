"""`svd curate STAGE` for a per-clip scoring stage, built from what the stage declares.

The command's options are, in this order: --manifest and --out; the options only its summary
reads (`StageSpec.summary_options`); one per setting the stage's settings dataclass makes an
option (`svdcli.curate.settings.setting`: flag, help, bounds); then the block every per-clip
stage shares (workers, rank, world size, executor, Ray address, progress, max error rate). The
command runs the stage as a recipe does (`per_clip.runner_of`), then prints the stage's summary and exits 1
when too many clips failed. A module `curate_cmds/<stage>.py`, when there is one, gives the
command's `HELP` and may define `before(settings) -> str` and `after(result) -> str`, lines
printed before the run and after it.

The stage module (pyarrow, numpy) is imported only when the command runs or shows its own
help: `svd --help` and `svd curate --help` list it by name and help alone (`Listed`).
"""
from __future__ import annotations

import importlib
import importlib.util
import inspect
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from typer.core import TyperCommand

from svdcli.cli.common import check_rank, print_stage_result, say, user_errors
from svdcli.cli.curate_cmds.options import (ExecutorName, Manifest, MaxErrorRate, Out, Progress, RayAddress, Rank,
                                            Workers, WorldSize)
from svdcli.cli.curate_cmds.progress import stage_bars

# the options every per-clip stage takes after its own: (name, annotation, default)
SHARED = (("workers", Workers, 1), ("rank", Rank, 0), ("world_size", WorldSize, 1),
          ("executor", ExecutorName, "local"), ("ray_address", RayAddress, "auto"), ("progress", Progress, True),
          ("max_error_rate", MaxErrorRate, 1.0))
_TYPES = {"str": str, "int": int, "float": float, "bool": bool}


class Listed(TyperCommand):
    """A declared stage's command as `svd curate --help` lists it: its name and help, no options
    (building those imports the stage module); `build()` makes the command itself."""

    def __init__(self, name: str):
        super().__init__(name, help=help_of(name))

    def build(self):
        return build(self.name)


def help_of(name: str) -> str:
    """The help of `svd curate NAME`: its command module's HELP, else the declaration's."""
    module = _command_module(name)
    if getattr(module, "HELP", None):
        return module.HELP
    from svdcli.curate import stages as registry

    spec = registry.spec(name)
    return spec.help or inspect.cleandoc((spec.stage.__doc__ or "") if spec.stage is not None else "")


def build(name: str):
    """The click command `svd curate NAME` of a registered per-clip stage."""
    from svdcli.curate import stages as registry

    module = _command_module(name)
    app = typer.Typer(add_completion=False)  # the root command has completion
    app.command(name, help=help_of(name))(command_function(registry.spec(name), getattr(module, "before", None),
                                                           getattr(module, "after", None)))
    return typer.main.get_command(app)


def _command_module(name: str):
    path = f"{__package__}.{name}"
    return importlib.import_module(path) if importlib.util.find_spec(path) else None


def command_function(spec, before=None, after=None):
    """The Typer function of a stage's command: its signature is the stage's options."""
    from svdcli.curate.per_clip import runner_of, summary_line
    from svdcli.curate.settings import options

    summary_opts, setting_opts = options(spec.summary_options), options(spec.config)
    clash = {o.name for o in summary_opts + setting_opts} & {"manifest", "out", *(n for n, _, _ in SHARED)}
    if clash:
        raise ValueError(f"stage {spec.name!r}: settings named like the shared options: {sorted(clash)}")
    params = [_param("manifest", Manifest), _param("out", Out, None),
              *(_option_param(o) for o in summary_opts + setting_opts),
              *(_param(n, a, d) for n, a, d in SHARED)]

    def command(**kw: Any) -> None:
        from svdcli.curate.executors import executor_for

        check_rank(kw["rank"], kw["world_size"])
        settings = {o.name: _value(o, kw[o.name]) for o in setting_opts}
        if before:
            say(before(settings))
        result, written = runner_of(spec)(kw["manifest"], kw["out"], workers=kw["workers"], rank=kw["rank"],
                                      world_size=kw["world_size"],
                                      executor=executor_for(kw["executor"], kw["ray_address"]),
                                      progress=stage_bars(kw["progress"]), **settings)
        if after:
            say(after(result))
        summary = {o.name: kw[o.name] for o in summary_opts}
        print_stage_result(spec.name, result, written, lambda path: summary_line(spec, path, **summary),
                           kw["max_error_rate"])

    command.__signature__ = inspect.Signature(params)
    command.__annotations__ = {p.name: p.annotation for p in params}
    return user_errors(command)


def _param(name: str, annotation: Any, default: Any = inspect.Parameter.empty) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default)


def _option_param(o) -> inspect.Parameter:
    """A setting as a Typer option: its type (Path for a path setting), help, bounds."""
    optional = o.type.endswith(" | None")
    typ = Path if o.path else _TYPES[o.type.removesuffix(" | None")]
    extra = {"callback": _strict(o)} if o.min_open or o.max_open else {}
    bound = lambda v: None if v is None or typ is Path else typ(v)  # noqa: E731 - `[0.0<=x]` for a float
    info = typer.Option(help=o.help, min=bound(o.min), max=bound(o.max), **extra)
    return _param(o.name, Annotated[Optional[typ] if optional else typ, info], o.default)


def _strict(o):
    """The open end of a bound (`gt`, `lt`), which Typer's min and max do not have."""
    def check(value):
        if value is not None and ((o.min_open and value <= o.min) or (o.max_open and value >= o.max)):
            side = f"above {o.min:g}" if o.min_open and value <= o.min else f"below {o.max:g}"
            raise typer.BadParameter(f"{value:g} is not {side}")
        return value
    return check


def _value(o, value: Any) -> Any:
    """A path option's value as the settings hold it (a string)."""
    return str(value) if o.path and value is not None else value
