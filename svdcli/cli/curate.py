"""`svd curate ...`: the curation stages over Parquet manifests.

A command module in curate_cmds that defines `register(app)` adds its commands (cuts, dedup,
filter, run, report). Every other registered stage is a per-clip scoring stage whose command is
built from its declaration (`curate_cmds/stage_command.py`) when it is first looked up, so the
stage modules, which import pyarrow, stay out of `svd --help`. In --help the stages come first,
in the registry's order, then `run` and `report`, then the rest.
"""
from __future__ import annotations

import importlib
import os
import pkgutil

import typer
from typer.core import TyperGroup

from svdcli.cli import curate_cmds
from svdcli.cli.curate_cmds.stage_command import Listed
from svdcli.curate import stages as registry


class CurateGroup(TyperGroup):
    """The `svd curate` group: registered commands, and a command per declared per-clip stage,
    listed by name and help and built when it runs (or shows its help)."""

    def list_commands(self, ctx) -> list[str]:
        names = set(super().list_commands(ctx)) | set(declared_stages())
        order = [*registry.NAMES, "run", "report"]
        return [n for n in order if n in names] + sorted(names - set(order))

    def get_command(self, ctx, name: str):
        command = super().get_command(ctx, name)
        if command is None and name in declared_stages():
            command = Listed(name)
        return command

    def invoke(self, ctx):
        # numpy's BLAS runs one thread in every stage (the executors hold it there); started with
        # one, OpenBLAS spawns no pool whose idle threads spin (~0.1 s each, after numpy loads and
        # again when the stage limits it) on the cores the decoder needs. A user's setting stays.
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
        return super().invoke(ctx)

    def resolve_command(self, ctx, args):
        name, command, rest = super().resolve_command(ctx, args)
        return name, (command.build() if isinstance(command, Listed) else command), rest


app = typer.Typer(cls=CurateGroup,
                  help="Curate a video corpus into a Parquet manifest: one row per clip, one "
                       f"column group per stage ({', '.join(registry.NAMES)}).",
                  no_args_is_help=True)

_registered = set()
for _info in pkgutil.iter_modules(curate_cmds.__path__):
    _module = importlib.import_module(f"svdcli.cli.curate_cmds.{_info.name}")
    if hasattr(_module, "register"):
        _module.register(app)
        _registered.add(_info.name)


def declared_stages() -> list[str]:
    """The registered stages whose command is built from their declaration (no `register` module)."""
    return [n for n in registry.NAMES if n not in _registered and registry.available(n)]
