"""The `svd` command. Sub-commands live in their own modules; heavy imports happen inside them."""
from __future__ import annotations

import atexit
import gc

import typer

from svdcli import __version__
from svdcli.cli import convert, curate, eval as eval_cmd, pack, render, sample, train, tune

# At exit Python collects the garbage of the whole heap several times (~25 ms each after a
# curation command's imports) only to free memory the process hands back anyway: ~0.07 s of
# every command's wall time. Frozen objects are left out of those collections (objects that
# are not garbage of a cycle are still freed as their modules are cleared). Registered
# before any of svdcli's own exit handlers, it runs after them.
atexit.register(gc.freeze)

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


if __name__ == "__main__":
    app()
