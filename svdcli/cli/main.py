"""The `svd` command. Sub-commands live in their own modules; heavy imports happen inside them."""
from __future__ import annotations

import atexit
import gc

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


def run() -> None:
    """The `svd` executable (and `python -m svdcli`): the app, then a quicker exit.

    At exit Python collects the garbage of the whole heap several times (~25 ms each after a
    curation command's imports) only to free memory the process hands back anyway: ~0.07 s of
    a command's wall time. The heap is frozen first, so those collections skip it (what is not
    cyclic garbage is still freed as the modules are cleared). Registered as the command
    starts, the freeze runs after every exit handler the command adds (Ray's shutdown, thread
    pools). Only the executable does this: a process that imports the app (tests, notebooks)
    exits as it would.
    """
    atexit.register(gc.freeze)
    app()


if __name__ == "__main__":
    run()
