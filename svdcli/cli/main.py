"""The `svd` command. Sub-commands live in their own modules; heavy imports happen inside them."""
from __future__ import annotations

import atexit
import copy
import gc
import sys

import typer

from svdcli import __version__
from svdcli.cli import convert, curate, eval as eval_cmd, pack, render, sample, train, tune

app = typer.Typer(
    name="svd",
    help="Stable Video Diffusion end to end: curate videos into manifests, pack shards, "
         "train with DeepSpeed and sample videos.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(curate.app, name="curate")
app.add_typer(render.app, name="render")
pack.register(app)
train.register(app)
tune.register(app)
sample.register(app)
convert.register(app)
app.add_typer(eval_cmd.app, name="eval")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"svdcli {__version__}")
        raise typer.Exit()


@app.callback()
def main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                      help="Print the version and exit.")) -> None:
    """Stable Video Diffusion end to end."""


def only_the_named(typer_app: typer.Typer, args: list[str]) -> typer.Typer:
    """`typer_app` with only the command (or group, and so on down) that `args` name, so that
    running it builds the one command it runs: building the whole tree (every command's
    signature read into Click parameters) costs ~30 ms of every command's start-up.

    Where a level names no registered command (an option, --help, a lazily declared stage, a
    typo), that level and those below it stay whole: help lists every command, and Click's "No
    such command" suggestions see them all. A command found runs exactly as in the whole app.
    """
    from typer.main import get_command_name

    name = args[0] if args else None
    if name is None or name.startswith("-"):
        return typer_app
    commands = [c for c in typer_app.registered_commands
                if (c.name or get_command_name(c.callback.__name__)) == name]
    groups = [g for g in typer_app.registered_groups if isinstance(g.name, str) and g.name == name]
    if not commands and not groups:
        return typer_app
    pruned = copy.copy(typer_app)
    pruned.registered_commands = commands
    pruned.registered_groups = []
    for group in groups:
        group = copy.copy(group)
        group.typer_instance = only_the_named(group.typer_instance, args[1:])
        pruned.registered_groups.append(group)
    return pruned


def run() -> None:
    """The `svd` executable (and `python -m svdcli`): the command it names, then a quicker exit.

    At exit Python collects the garbage of the whole heap several times (~25 ms each after a
    curation command's imports) only to free memory the process hands back anyway: ~0.07 s of
    a command's wall time. The heap is frozen first, so those collections skip it (what is not
    cyclic garbage is still freed as the modules are cleared). Registered as the command
    starts, the freeze runs after every exit handler the command adds (Ray's shutdown, thread
    pools). Only the executable does this: a process that imports the app (tests, notebooks)
    exits as it would. Only the command the arguments name is built (`only_the_named`).
    """
    atexit.register(gc.freeze)
    only_the_named(app, sys.argv[1:])()


if __name__ == "__main__":
    run()
